// Package contract holds no code of previewd: it is where the OpenAPI
// document (api/openapi.json) is checked with the tools integrators use.
// Its test lints the document with Redocly's recommended rules, generates
// TypeScript types from it with openapi-typescript, compiles a typed API
// client and a webhook handler under tsc --strict, runs the client against
// a real API and has the handler verify real signed deliveries with the
// Standard Webhooks library. The npm tools are pinned in package.json and
// package-lock.json; the test runs npm ci when node_modules is missing or
// older than the lock file.
package contract
