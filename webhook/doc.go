// Package webhook signs and delivers previewd's outgoing webhooks.
//
// It owns three things and nothing else:
//
//   - Signing and verification per Standard Webhooks (Secret, SigningKey,
//     Signer, Verify, VerifyAsymmetric): the webhook-id, webhook-timestamp
//     and webhook-signature headers, HMAC-SHA256 (v1, whsec_ secrets) or
//     ed25519 (v1a, whsk_/whpk_ key pairs) over "id.timestamp.body".
//   - The address policy that keeps webhooks off private networks (IsPublic,
//     CheckURL). It is applied when a URL is registered and again on the
//     address actually dialled, so DNS rebinding is caught.
//   - Sending one request safely (Sender): bounded time, bounded response
//     reading, no redirects, no proxies, and an error that tells the caller
//     whether to retry (DeliveryError).
//
// The package knows nothing about jobs, queues or storage; retry scheduling
// belongs to the caller. Signing secrets never appear in errors, logs or
// formatted output.
package webhook
