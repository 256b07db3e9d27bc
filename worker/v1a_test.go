package worker_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/previewd/previewd/csmsim"
	"github.com/previewd/previewd/internal/testutil"
	"github.com/previewd/previewd/store"
	"github.com/previewd/previewd/tasks"
)

// verifyV1a is a receiver's check written straight from the Standard
// Webhooks spec with crypto/ed25519 (not previewd's webhook package): some
// "v1a,<base64>" entry of webhook-signature is the ed25519 signature of
// "{webhook-id}.{webhook-timestamp}.{body}" under the whpk_ public key. It
// also returns how many v1 and v1a entries the header has.
func verifyV1a(t *testing.T, whpk string, d testutil.Delivery) (ok bool, v1, v1a int) {
	t.Helper()
	pub, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(whpk, "whpk_"))
	if err != nil || !strings.HasPrefix(whpk, "whpk_") || len(pub) != ed25519.PublicKeySize {
		t.Fatalf("public key %q is not whpk_ and the base64 of 32 bytes", whpk)
	}
	content := []byte(fmt.Sprintf("%s.%s.%s", d.Header.Get("webhook-id"), d.Header.Get("webhook-timestamp"), d.Body))
	for _, entry := range strings.Split(d.Header.Get("webhook-signature"), " ") {
		version, enc, _ := strings.Cut(entry, ",")
		switch version {
		case "v1":
			v1++
		case "v1a":
			v1a++
			if sig, err := base64.StdEncoding.DecodeString(enc); err == nil && ed25519.Verify(pub, content, sig) {
				ok = true
			}
		}
	}
	return ok, v1, v1a
}

// gotEvent reports whether an event of type typ of the job was received.
func gotEvent(ds []testutil.Delivery, jobID string, typ store.EventType) bool {
	for _, d := range ds {
		var ev store.EventBody
		if json.Unmarshal(d.Body, &ev) == nil && ev.Data.ID == jobID && ev.Type == typ {
			return true
		}
	}
	return false
}

// TestV1aEndpointDelivery: a v1a endpoint's deliveries carry ed25519
// signatures only (no HMAC entry a v1 receiver could be fooled into
// accepting), which verify under the public key its creation returned;
// after a rotation, every delivery verifies under the old and the new
// public key alike, and a changed body verifies under neither.
func TestV1aEndpointDelivery(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	rcv := testutil.NewReceiver(t)
	ctx := context.Background()
	ep, oldPub, err := h.producer.AddEndpoint(ctx, tasks.EndpointRequest{URL: rcv.URL, SignatureVersion: "v1a"})
	if err != nil {
		t.Fatal(err)
	}
	if ep.SignatureVersion != store.SignatureV1a || !strings.HasPrefix(oldPub, "whpk_") {
		t.Fatalf("created %s endpoint answering %q", ep.SignatureVersion, oldPub)
	}
	h.start()
	job := h.request("SESSION_V1A_"+testutil.RandomHex(4), csmsim.SessionConfig{GenerationTime: time.Second})
	h.waitFinal(job.ID, 20*time.Second)
	ds := rcv.WaitFor(t, 10*time.Second, "the final event at the v1a endpoint", func(ds []testutil.Delivery) bool {
		return gotEvent(ds, job.ID, store.EventDone)
	})
	for _, d := range ds {
		ok, v1, v1a := verifyV1a(t, oldPub, d)
		if !ok || v1 != 0 || v1a != 1 {
			t.Fatalf("delivery: verifies=%v with %d v1 and %d v1a entries: %q", ok, v1, v1a, d.Header.Get("webhook-signature"))
		}
	}
	// The worker's own whsec_ (the job URL's) does not verify an endpoint's delivery.
	if wh, _ := standardwebhooks.NewWebhook(h.secretText); wh.Verify(ds[0].Body, ds[0].Header) == nil {
		t.Fatal("a v1a delivery verifies with an HMAC secret")
	}

	_, newPub, err := h.producer.RotateEndpointSecret(ctx, ep.ID)
	if err != nil || !strings.HasPrefix(newPub, "whpk_") || newPub == oldPub {
		t.Fatalf("rotate: %v (%q)", err, newPub)
	}
	before := len(rcv.Deliveries())
	second := h.request("SESSION_V1A_"+testutil.RandomHex(4), csmsim.SessionConfig{GenerationTime: time.Second})
	h.waitFinal(second.ID, 20*time.Second)
	ds = rcv.WaitFor(t, 10*time.Second, "the second job's final event", func(ds []testutil.Delivery) bool {
		return gotEvent(ds[before:], second.ID, store.EventDone)
	})[before:]
	for _, d := range ds {
		if !bytes.Contains(d.Body, []byte(second.ID)) {
			continue // a late delivery of the first job, signed before the rotation
		}
		for _, pub := range []string{oldPub, newPub} {
			if ok, v1, v1a := verifyV1a(t, pub, d); !ok || v1 != 0 || v1a != 2 {
				t.Fatalf("during the rotation window: verifies=%v under %.12s… with %d v1 and %d v1a entries", ok, pub, v1, v1a)
			}
		}
		tampered := d
		tampered.Body = bytes.Replace(d.Body, []byte(second.ID), []byte("00000000-0000-0000-0000-000000000000"), 1)
		if ok, _, _ := verifyV1a(t, newPub, tampered); ok {
			t.Fatal("a changed body verifies")
		}
	}
}
