package contract_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pb33f/libopenapi"
	"github.com/pb33f/libopenapi-validator/schema_validation"
	"github.com/pb33f/libopenapi/datamodel/high/base"

	"github.com/previewd/previewd/api"
	"github.com/previewd/previewd/internal/testutil"
	"github.com/previewd/previewd/store"
	"github.com/previewd/previewd/tasks"
	"github.com/previewd/previewd/webhook"
)

// receiver is src/receiver.ts running in node: one report per request.
type receiver struct {
	url     string
	reports chan report
}

type report struct {
	OK        bool   `json:"ok"`
	ID        string `json:"id"`
	Type      string `json:"type"`
	Summary   string `json:"summary"`
	Error     string `json:"error"`
	Listening int    `json:"listening"`
}

func startReceiver(t *testing.T, dir, secret string) *receiver {
	t.Helper()
	cmd := exec.Command("node", filepath.Join("out", "receiver.js"))
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "WEBHOOK_SECRET="+secret)
	cmd.Stderr = testWriter{t}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = stdin.Close() // the receiver closes its server and exits
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	r := &receiver{reports: make(chan report, 16)}
	lines := bufio.NewScanner(stdout)
	if !lines.Scan() {
		t.Fatalf("the receiver exited before listening: %v", lines.Err())
	}
	var first report
	if err := json.Unmarshal(lines.Bytes(), &first); err != nil || first.Listening == 0 {
		t.Fatalf("the receiver's first line %q: %v", lines.Bytes(), err)
	}
	r.url = "http://127.0.0.1:" + strconv.Itoa(first.Listening) + "/previewd"
	go func() {
		defer close(r.reports)
		for lines.Scan() {
			var rep report
			if err := json.Unmarshal(lines.Bytes(), &rep); err != nil {
				rep = report{Error: "unreadable report " + lines.Text()}
			}
			r.reports <- rep
		}
	}()
	return r
}

func (r *receiver) next(t *testing.T) report {
	t.Helper()
	select {
	case rep, ok := <-r.reports:
		if !ok {
			t.Fatal("the receiver exited")
		}
		return rep
	case <-time.After(time.Minute):
		t.Fatal("the receiver reported nothing")
	}
	return report{}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Logf("receiver: %s", strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// realEvents makes jobs go through every event type the way the worker
// and the API do (the same store.Job methods and tasks.Emit, committed by
// store.Update; the cancel through the producer API itself) and returns
// the event bodies the store rendered, byte for byte what deliveries send.
func realEvents(t *testing.T) []store.Event {
	t.Helper()
	ctx := context.Background()
	r := testutil.NewRedis(t)
	control := tasks.NewClient(r.Client, tasks.ClientOptions{Namespace: r.Namespace})
	st := control.Store()
	submit := func(key string) store.Job {
		t.Helper()
		job, _, err := control.Submit(ctx, tasks.PreviewRequest{
			SessionCode: "SESSION_1689257215_1674078", SelectedSpinIndex: 1,
			ScaledBBox: []float64{1, 1.5, 0.8}, ExternalID: "asset-" + key, IdempotencyKey: key,
		})
		if err != nil {
			t.Fatal(err)
		}
		return job
	}
	step := func(id string, fn func(j *store.Job, now time.Time, c *store.Change)) {
		t.Helper()
		if _, err := st.Update(ctx, id, func(j *store.Job, now time.Time) (store.Change, error) {
			var c store.Change
			fn(j, now, &c)
			return c, nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	accept := func(j *store.Job, now time.Time, c *store.Change) {
		j.SetStatus(store.StatusRequesting, now, "")
		j.UniqueTrialKey = "trial-" + j.ID[:8]
		j.Request.Outcome, j.Request.AcceptedAt = store.OutcomeAccepted, &now
		j.SetUpstreamStatus("preview_generating", now)
		j.SetStatus(store.StatusGenerating, now, "preview accepted by CSM")
		tasks.Emit(c, j, store.EventAccepted)
	}

	done := submit("contract-done")
	step(done.ID, accept)
	step(done.ID, func(j *store.Job, now time.Time, c *store.Change) {
		j.Polls++
		percent := 40
		j.PercentDone = &percent
		j.SetUpstreamStatus("preview_generating_mesh", now)
		tasks.Emit(c, j, store.EventProgress)
	})
	step(done.ID, func(j *store.Job, now time.Time, c *store.Change) {
		j.Polls++
		full := 100
		j.PercentDone = &full
		j.SetUpstreamStatus("preview_done", now)
		j.MeshURLs = map[string]string{"glb": "https://cdn.example.com/m.glb", "obj": "https://cdn.example.com/m.obj"}
		j.Finish(store.StatusDone, now, nil, "")
		tasks.Emit(c, j, store.EventDone)
	})
	failed := submit("contract-failed")
	step(failed.ID, func(j *store.Job, now time.Time, c *store.Change) {
		j.SetStatus(store.StatusRequesting, now, "")
		j.Finish(store.StatusFailed, now, &store.JobError{Code: store.CodeUpstreamRejected, Message: "CSM answered 400"}, "")
		tasks.Emit(c, j, store.EventFailed)
	})
	timedOut := submit("contract-timed-out")
	step(timedOut.ID, accept)
	step(timedOut.ID, func(j *store.Job, now time.Time, c *store.Change) {
		j.Finish(store.StatusTimedOut, now, &store.JobError{Code: store.CodeDeadlineExceeded, Message: "the deadline passed"}, "")
		tasks.Emit(c, j, store.FinalEvent(store.StatusTimedOut))
	})
	canceled := submit("contract-canceled")
	if _, err := control.Cancel(ctx, canceled.ID); err != nil {
		t.Fatal(err)
	}

	var events []store.Event
	for _, id := range []string{done.ID, failed.ID, timedOut.ID, canceled.ID} {
		bodies, err := st.Events(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		for eid, body := range bodies {
			events = append(events, store.Event{ID: eid, Body: body})
		}
	}
	return events
}

// webhookSchemas returns the request body schema of each webhook of the
// document, by event type.
func webhookSchemas(t *testing.T) map[string]*base.Schema {
	t.Helper()
	doc, err := libopenapi.NewDocument(api.OpenAPIDocument())
	if err != nil {
		t.Fatal(err)
	}
	model, err := doc.BuildV3Model()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*base.Schema{}
	for typ, item := range model.Model.Webhooks.FromOldest() {
		if item.Post == nil || item.Post.RequestBody == nil {
			t.Fatalf("webhook %s has no POST with a body", typ)
		}
		media, ok := item.Post.RequestBody.Content.Get("application/json")
		if !ok || media.Schema == nil {
			t.Fatalf("webhook %s has no application/json schema", typ)
		}
		out[typ] = media.Schema.Schema()
	}
	return out
}

// TestWebhookDeliveriesVerify sends real events, one of each type, with
// previewd's webhook sender signed with a whsec_ secret, to the receiver
// compiled from src/receiver.ts, which verifies them with the Standard
// Webhooks library and narrows them to the types generated from the
// document's webhooks. Each body is also checked against its webhook's
// schema here. Deliveries with a wrong secret or a stale timestamp must be
// refused.
func TestWebhookDeliveriesVerify(t *testing.T) {
	t.Parallel()
	dir := compiled(t)
	secret, err := webhook.GenerateSecret()
	if err != nil {
		t.Fatal(err)
	}
	recv := startReceiver(t, dir, secret)
	schemas := webhookSchemas(t)
	var documented []string
	for typ := range schemas {
		documented = append(documented, typ)
	}
	var emitted []string
	for _, typ := range tasks.EventTypes {
		emitted = append(emitted, string(typ))
	}
	slices.Sort(documented)
	slices.Sort(emitted)
	if !slices.Equal(documented, emitted) {
		t.Fatalf("the document's webhooks are %v; previewd emits %v", documented, emitted)
	}

	sender := webhook.NewSender(webhook.SenderOptions{AllowPrivate: true, Timeout: 30 * time.Second})
	t.Cleanup(sender.CloseIdleConnections)
	signer, err := webhook.SignerFor(secret)
	if err != nil {
		t.Fatal(err)
	}
	validator := schema_validation.NewSchemaValidator()
	ctx := context.Background()
	seen := map[string]bool{}
	events := realEvents(t)
	for _, ev := range events {
		var head struct {
			Type string `json:"type"`
		}
		if err := json.Unmarshal(ev.Body, &head); err != nil {
			t.Fatal(err)
		}
		schema, ok := schemas[head.Type]
		if !ok {
			t.Fatalf("event %s has type %q, which the document does not describe", ev.ID, head.Type)
		}
		if ok, errs := validator.ValidateSchemaBytes(schema, ev.Body); !ok {
			var msgs []string
			for _, e := range errs {
				msgs = append(msgs, e.Error())
				for _, v := range e.SchemaValidationErrors {
					msgs = append(msgs, v.FieldPath+": "+v.Reason)
				}
			}
			t.Errorf("%s body breaks its webhook schema: %s\n%s", head.Type, strings.Join(msgs, "; "), ev.Body)
		}
		res, err := sender.Send(ctx, recv.url, signer, webhook.Message{ID: ev.ID, Body: ev.Body}, time.Now())
		rep := recv.next(t)
		if err != nil || res.StatusCode != 204 {
			t.Fatalf("%s delivery: status %d, %v; the receiver said %+v", head.Type, res.StatusCode, err, rep)
		}
		if !rep.OK || rep.ID != ev.ID || rep.Type != head.Type {
			t.Fatalf("%s delivery %s: the receiver reported %+v", head.Type, ev.ID, rep)
		}
		t.Logf("%s verified: %s", rep.Type, rep.Summary)
		seen[head.Type] = true
	}
	for _, typ := range emitted {
		if !seen[typ] {
			t.Errorf("no %s event was delivered", typ)
		}
	}

	// During a rotation window a delivery carries a signature per active
	// secret; the receiver holding either one accepts it.
	old, err := webhook.GenerateSecret()
	if err != nil {
		t.Fatal(err)
	}
	rotating, err := webhook.SignerFor(old, secret)
	if err != nil {
		t.Fatal(err)
	}
	ev := events[0]
	if res, err := sender.Send(ctx, recv.url, rotating, webhook.Message{ID: ev.ID, Body: ev.Body}, time.Now()); err != nil || res.StatusCode != 204 {
		t.Fatalf("delivery signed with the old and the new secret: %d %v; receiver: %+v", res.StatusCode, err, recv.next(t))
	}
	if rep := recv.next(t); !rep.OK {
		t.Fatalf("delivery signed with the old and the new secret: %+v", rep)
	}

	// Refusals: the receiver must be able to say no.
	otherSigner, err := webhook.SignerFor(old)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		signer *webhook.Signer
		at     time.Time
		want   string
	}{
		{"another secret", otherSigner, time.Now(), "WebhookVerificationError"},
		{"a timestamp ten minutes old", signer, time.Now().Add(-10 * time.Minute), "WebhookVerificationError"},
	} {
		_, err := sender.Send(ctx, recv.url, c.signer, webhook.Message{ID: ev.ID, Body: ev.Body}, c.at)
		rep := recv.next(t)
		var de *webhook.DeliveryError
		if !errors.As(err, &de) || de.StatusCode != 400 {
			t.Errorf("%s: delivery error %v, want a 400 refusal", c.name, err)
		}
		if rep.OK || !strings.Contains(rep.Error, c.want) {
			t.Errorf("%s: the receiver reported %+v, want a %s", c.name, rep, c.want)
		}
	}
}
