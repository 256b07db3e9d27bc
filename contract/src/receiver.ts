// A webhook receiver as an integrator would write one: it verifies every
// delivery with WEBHOOK_SECRET (a whsec_ secret) and answers 204, or 400
// when verification fails. It prints {"listening": port} once, then one JSON
// line per request, for contract_test.go to read.
import { createServer } from "node:http";
import { Webhook } from "standardwebhooks";
import { deliveryHeaders, summarize, verifyDelivery } from "./webhook.js";

const secret = process.env["WEBHOOK_SECRET"];
if (!secret?.startsWith("whsec_")) {
  console.error("WEBHOOK_SECRET must be a whsec_ secret");
  process.exit(2);
}
const wh = new Webhook(secret);

function report(line: Record<string, unknown>): void {
  process.stdout.write(JSON.stringify(line) + "\n");
}

const server = createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on("data", (c: Buffer) => chunks.push(c));
  req.on("end", () => {
    const raw = Buffer.concat(chunks).toString("utf8");
    const headers = deliveryHeaders(req.headers);
    const contentType = req.headers["content-type"] ?? "";
    try {
      if (req.method !== "POST" || contentType !== "application/json") {
        throw new Error(`want POST application/json, got ${req.method} ${contentType}`);
      }
      if (headers === undefined) {
        throw new Error("missing webhook-id, webhook-timestamp or webhook-signature");
      }
      const event = verifyDelivery(wh, raw, headers);
      report({ ok: true, id: headers["webhook-id"], type: event.type, summary: summarize(event) });
      res.writeHead(204).end();
    } catch (err) {
      const name = err instanceof Error ? err.name : "Error";
      const message = err instanceof Error ? err.message : String(err);
      report({ ok: false, id: headers?.["webhook-id"] ?? "", error: `${name}: ${message}` });
      res.writeHead(400, { "content-type": "text/plain" }).end(message);
    }
  });
});

server.listen(0, "127.0.0.1", () => {
  const addr = server.address();
  if (addr === null || typeof addr === "string") {
    throw new Error("no TCP address");
  }
  report({ listening: addr.port });
});
// contract_test.go closes stdin to stop the receiver.
process.stdin.on("end", () => server.close()).resume();
