// A webhook handler typed from the `webhooks` section of previewd's OpenAPI
// document (openapi-typescript writes schema.d.ts from it), verifying each
// delivery with the Standard Webhooks library before trusting its body.
import { Webhook } from "standardwebhooks";
import type { webhooks } from "./schema.js";

/** Every event type previewd sends: the keys of the document's `webhooks`. */
export type EventType = keyof webhooks;
type Operation<T extends EventType> = webhooks[T]["post"];
/** The body of one event type. */
export type EventOf<T extends EventType> = Operation<T>["requestBody"]["content"]["application/json"];
/** The body of any event, told apart by `type`. */
export type PreviewEvent = { [T in EventType]: EventOf<T> }[EventType];
/** The Standard Webhooks headers every delivery carries. */
export type DeliveryHeaders = Operation<EventType>["parameters"]["header"];

// The job status each event's data carries. Typed from the document: if
// it said another status for an event, or named an event this map lacks,
// this would not compile.
const statusOf: { [T in EventType]: EventOf<T>["data"]["status"] } = {
  "preview.accepted": "generating",
  "preview.progress": "generating",
  "preview.done": "done",
  "preview.failed": "failed",
  "preview.timed_out": "timed_out",
  "preview.canceled": "canceled",
};

function isEventType(t: unknown): t is EventType {
  return typeof t === "string" && Object.hasOwn(statusOf, t);
}

/**
 * Reads the three Standard Webhooks headers from Node's lower-cased
 * IncomingHttpHeaders; undefined when one is missing or repeated.
 */
export function deliveryHeaders(h: Record<string, string | string[] | undefined>): DeliveryHeaders | undefined {
  const id = h["webhook-id"], ts = h["webhook-timestamp"], sig = h["webhook-signature"];
  if (typeof id !== "string" || typeof ts !== "string" || typeof sig !== "string") {
    return undefined;
  }
  return { "webhook-id": id, "webhook-timestamp": ts, "webhook-signature": sig };
}

/**
 * Verifies a delivery (signature over the raw body, timestamp within five
 * minutes) and returns its event. It throws WebhookVerificationError for a
 * bad signature or timestamp, and Error for a body that is not an event.
 */
export function verifyDelivery(wh: Webhook, rawBody: string, headers: DeliveryHeaders): PreviewEvent {
  const payload = wh.verify(rawBody, { ...headers });
  if (typeof payload !== "object" || payload === null) {
    throw new Error("the body is not a JSON object");
  }
  const { type, data } = payload as { type?: unknown; data?: unknown };
  if (!isEventType(type)) {
    throw new Error(`unknown event type ${JSON.stringify(type)}`);
  }
  if (typeof data !== "object" || data === null) {
    throw new Error("the event has no data object");
  }
  const status = (data as { status?: unknown }).status;
  if (status !== statusOf[type]) {
    throw new Error(`${type} carries status ${JSON.stringify(status)}, want ${statusOf[type]}`);
  }
  return payload as PreviewEvent;
}

/** What an integrator's handler does with each event: here, one line. */
export function summarize(event: PreviewEvent): string {
  const d = event.data;
  switch (event.type) {
    case "preview.accepted":
      return `${d.id} accepted (${d.session_code}, trial ${event.data.unique_trial_key || "-"})`;
    case "preview.progress":
      return `${d.id} ${event.data.upstream_status} ${event.data.percent_done ?? "-"}%`;
    case "preview.done":
      return `${d.id} done at ${event.data.finished_at}: ${Object.keys(event.data.mesh_urls ?? {}).sort().join(",")}`;
    case "preview.failed":
    case "preview.timed_out":
    case "preview.canceled":
      // error is required on these three: no optional chaining needed.
      return `${d.id} ${event.data.status} at ${event.data.finished_at}: ${event.data.error.code}`;
    default: {
      const unhandled: never = event;
      throw new Error(`unhandled event ${JSON.stringify(unhandled)}`);
    }
  }
}
