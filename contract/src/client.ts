// A typed client of previewd's API: openapi-fetch over the paths that
// openapi-typescript generated from the OpenAPI document (schema.d.ts).
import createClient, { type Client } from "openapi-fetch";
import type { components, paths } from "./schema.js";

export type Job = components["schemas"]["Job"];
export type JobList = components["schemas"]["JobList"];
export type Problem = components["schemas"]["Problem"];
export type PreviewRequest = components["schemas"]["PreviewRequest"];
export type Endpoint = components["schemas"]["EndpointWithSecret"];

/** A client of the previewd API at baseUrl, authenticated with an API token. */
export function previewdClient(baseUrl: string, token: string): Client<paths> {
  return createClient<paths>({ baseUrl, headers: { Authorization: `Bearer ${token}` } });
}
