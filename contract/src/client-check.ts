// Drives a running previewd API with the typed client: create a preview
// (and repeat it with the same key), read it, list it, cancel it, read its
// webhook messages, register an endpoint, and ask for a job that does not
// exist. Prints one JSON object with what it saw, for contract_test.go;
// exits 1 when an answer is not the one the types promise.
import { previewdClient, type Job, type Problem } from "./client.js";

const [baseUrl, token] = process.argv.slice(2);
if (baseUrl === undefined || token === undefined) {
  console.error("usage: client-check <base URL> <token>");
  process.exit(2);
}
const api = previewdClient(baseUrl, token);

function fail(what: string, detail: unknown): never {
  console.error(`${what}: ${JSON.stringify(detail)}`);
  process.exit(1);
}

const body = { session_code: "SESSION_1689257215_1674078", selected_spin_index: 1, external_id: "ts-client" } as const;
const created = await api.POST("/v1/previews", { body, params: { header: { "Idempotency-Key": "ts-client-1" } } });
if (created.data === undefined || created.response.status !== 201) {
  fail("create", created.error);
}
const job: Job = created.data;

const again = await api.POST("/v1/previews", { body, params: { header: { "Idempotency-Key": "ts-client-1" } } });
if (again.data?.id !== job.id || again.response.headers.get("Idempotent-Replayed") !== "true") {
  fail("repeat", again.error ?? again.data);
}

const read = await api.GET("/v1/previews/{id}", { params: { path: { id: job.id } } });
if (read.data === undefined) {
  fail("read", read.error);
}

const list = await api.GET("/v1/previews", { params: { query: { status: "queued", limit: 10 } } });
if (list.data === undefined || !list.data.items.some((j) => j.id === job.id)) {
  fail("list", list.error ?? list.data);
}

const canceled = await api.POST("/v1/previews/{id}/cancel", { params: { path: { id: job.id } } });
if (canceled.data?.status !== "canceled" || canceled.data.error?.code !== "canceled") {
  fail("cancel", canceled.error ?? canceled.data);
}

const messages = await api.GET("/v1/previews/{id}/webhooks", { params: { path: { id: job.id } } });
if (messages.data === undefined) {
  fail("messages", messages.error);
}

const endpoint = await api.POST("/v1/endpoints", { body: { url: "https://hooks.example.com/previewd", event_types: ["preview.done"] } });
if (endpoint.data === undefined || !endpoint.data.secret?.startsWith("whsec_")) {
  fail("endpoint", endpoint.error);
}

const missing = await api.GET("/v1/previews/{id}", { params: { path: { id: "00000000-0000-4000-8000-000000000000" } } });
const problem: Problem | undefined = missing.error;
if (problem?.status !== 404 || missing.response.headers.get("Content-Type") !== "application/problem+json") {
  fail("missing job", problem);
}

console.log(JSON.stringify({
  job_id: job.id,
  read_status: read.data.status,
  listed: list.data.items.length,
  canceled_status: canceled.data.status,
  messages: messages.data.items.map((m) => m.event_type),
  endpoint_id: endpoint.data.id,
  missing_status: problem.status,
}));
