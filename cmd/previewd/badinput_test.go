package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/previewd/previewd/api"
	"github.com/previewd/previewd/csm"
	"github.com/previewd/previewd/internal/testutil"
	"github.com/previewd/previewd/tasks"
	"github.com/previewd/previewd/webhook"
)

// badInput is one row of docs/bad-input.md: a kind of outside input, the
// bad value, and the exact error it gets. run feeds the value through the
// real code path and returns the error text (it fails the test itself when
// what follows the error, the "then" column, does not hold).
type badInput struct {
	kind, input, want string
	run               func(t *testing.T) string
}

// TestBadInput feeds every row of docs/bad-input.md through the code that
// meets it, checks the exact error, and that the table and these cases are
// the same rows: nothing panics, every error names what is wrong, and none
// is retried forever.
func TestBadInput(t *testing.T) {
	t.Parallel()
	cases := badInputs(t)
	for _, tc := range cases {
		t.Run(tc.kind+"/"+tc.input, func(t *testing.T) {
			if got := tc.run(t); got != tc.want {
				t.Errorf("error = %q, want %q", got, tc.want)
			}
		})
	}
	doc, err := os.ReadFile("../../docs/bad-input.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := tableRows(string(doc))
	var want []string
	for _, tc := range cases {
		want = append(want, tc.kind+" | "+tc.input+" | "+tc.want)
	}
	if strings.Join(rows, "\n") != strings.Join(want, "\n") {
		t.Errorf("docs/bad-input.md rows differ from TestBadInput's cases; the doc has:\n%s\nthe cases are:\n%s",
			strings.Join(rows, "\n"), strings.Join(want, "\n"))
	}
}

// tableRows returns the first three cells of each body row of the
// document's table, unquoted from their code spans and joined by " | ".
func tableRows(doc string) []string {
	var rows []string
	cell := regexp.MustCompile("^`(.*)`$")
	for _, line := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(line, "| ") || strings.HasPrefix(line, "| kind ") || strings.HasPrefix(line, "| ---") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "| "), " | ")
		if len(cells) < 3 {
			continue
		}
		for i := range cells[:3] {
			c := strings.TrimSpace(cells[i])
			if m := cell.FindStringSubmatch(c); m != nil {
				c = m[1]
			}
			cells[i] = strings.ReplaceAll(c, `\|`, "|")
		}
		rows = append(rows, strings.Join(cells[:3], " | "))
	}
	return rows
}

func badInputs(t *testing.T) []badInput {
	task := func(typ, payload string) func(*testing.T) string {
		return func(t *testing.T) string {
			var err error
			task := asynq.NewTask(typ, []byte(payload))
			switch typ {
			case tasks.TypeRequestPreview:
				_, err = tasks.Decode[tasks.RequestPreview](task)
			case tasks.TypePollPreview:
				_, err = tasks.Decode[tasks.PollPreview](task)
			case tasks.TypeDeliverWebhook:
				_, err = tasks.Decode[tasks.DeliverWebhook](task)
			}
			// Malformed tasks are archived at once, never retried.
			if !errors.Is(err, tasks.ErrMalformed) {
				t.Fatalf("Decode = %v, want ErrMalformed", err)
			}
			return err.Error()
		}
	}
	cli := func(args ...string) func(*testing.T) string {
		return func(t *testing.T) string {
			var out, errOut bytes.Buffer
			env := map[string]string{"PREVIEWD_REDIS_URL": "redis://127.0.0.1:9/0"} // never reached
			code := run(context.Background(), args, &out, &errOut, func(k string) string { return env[k] })
			if code != exitUsage || out.Len() != 0 {
				t.Fatalf("exit %d, stdout %q; want exit %d and nothing on stdout", code, out.String(), exitUsage)
			}
			return strings.TrimSpace(errOut.String())
		}
	}
	httpAPI := newBadInputAPI(t)
	post := func(body string) func(*testing.T) string { return httpAPI.post(body) }
	csmReply := func(status int, header, body string) func(*testing.T) string {
		return func(t *testing.T) string { return csmAnswer(t, status, header, body) }
	}
	receiver := func(status int, header, body string) func(*testing.T) string {
		return func(t *testing.T) string { return receiverAnswer(t, status, header, body) }
	}
	big := `{"session_code":"` + strings.Repeat("x", 70<<10) + `"}`
	return []badInput{
		{"task payload", `request: {`, `malformed task: preview:request payload: unexpected EOF`, task(tasks.TypeRequestPreview, `{`)},
		{"task payload", `request: {"job_id":"x","session_code":"S1"}`, `malformed task: preview:request payload: job_id: must be a UUID`, task(tasks.TypeRequestPreview, `{"job_id":"x","session_code":"S1"}`)},
		{"task payload", `request: unknown field "seq"`, `malformed task: preview:request payload: json: unknown field "seq"`, task(tasks.TypeRequestPreview, `{"job_id":"6ba7b810-9dad-11d1-80b4-00c04fd430c8","session_code":"S1","seq":1}`)},
		{"task payload", `poll: "seq":0`, `malformed task: preview:poll payload: seq: must be at least 1`, task(tasks.TypePollPreview, `{"job_id":"6ba7b810-9dad-11d1-80b4-00c04fd430c8","session_code":"S1","seq":0}`)},
		{"task payload", `deliver: "event_id":"evt_"`, `malformed task: webhook:deliver payload: event_id: must look like evt_<48 hex digits> (or evt_<32 hex digits>, an older event's)`, task(tasks.TypeDeliverWebhook, `{"job_id":"6ba7b810-9dad-11d1-80b4-00c04fd430c8","event_id":"evt_","event_type":"preview.done","destination":"job"}`)},
		{"CLI flag", "enqueue (no --session)", `previewd enqueue: invalid --session (session_code): is required`, cli("enqueue")},
		{"CLI flag", "enqueue --session S1 --spin-index 4", `previewd enqueue: invalid --spin-index (selected_spin_index): must be 0, 1, 2 or 3`, cli("enqueue", "--session", "S1", "--spin-index", "4")},
		{"CLI flag", "enqueue --session S1 --bbox 1,2", `previewd enqueue: invalid --bbox (scaled_bbox): want 3 comma-separated numbers, got 2`, cli("enqueue", "--session", "S1", "--bbox", "1,2")},
		{"CLI flag", "enqueue --session S1 --pivot 0,0.7,0", `previewd enqueue: invalid --pivot (pivot_point): each coordinate must be between -0.5 and 0.5`, cli("enqueue", "--session", "S1", "--pivot", "0,0.7,0")},
		{"CLI flag", "enqueue --session S1 --webhook-url file:///etc/passwd", `previewd enqueue: invalid --webhook-url (webhook_url): must be an http or https URL`, cli("enqueue", "--session", "S1", "--webhook-url", "file:///etc/passwd")},
		{"CLI flag", "worker --poll-interval soon", `previewd worker: configuration: PREVIEWD_POLL_INTERVAL (--poll-interval): not a duration (like 30s, 5m, 3h): "soon"`, cli("worker", "--poll-interval", "soon")},
		{"HTTP body", `{"session_code":`, `400 {"type":"about:blank","title":"Invalid JSON","status":400,"detail":"the body must be one JSON object"}`, post(`{"session_code":`)},
		{"HTTP body", `{"session_code":"S1","colour":"red"}`, `400 {"type":"about:blank","title":"Invalid JSON","status":400,"detail":"unknown field \"colour\"","errors":[{"field":"colour","message":"is not a known field"}]}`, post(`{"session_code":"S1","colour":"red"}`)},
		{"HTTP body", `{"session_code":7}`, `400 {"type":"about:blank","title":"Invalid JSON","status":400,"detail":"a field has the wrong type","errors":[{"field":"session_code","message":"must be a string"}]}`, post(`{"session_code":7}`)},
		{"HTTP body", `{"session_code":"S1","selected_spin_index":9}`, `422 {"type":"about:blank","title":"Invalid request","status":422,"detail":"invalid request: selected_spin_index: must be 0, 1, 2 or 3","errors":[{"field":"selected_spin_index","message":"must be 0, 1, 2 or 3"}]}`, post(`{"session_code":"S1","selected_spin_index":9}`)},
		{"HTTP body", `a 70 KiB body`, `413 {"type":"about:blank","title":"Request body too large","status":413,"detail":"the body must be at most 65536 bytes"}`, post(big)},
		{"CSM reply", `200 {"data": (cut short)`, `csm request preview: protocol (status 200): decode preview response: unexpected end of JSON input (kind protocol, retryable false, retry after 0s)`, csmReply(200, "", `{"data":`)},
		{"CSM reply", `200 {"statusCode":500,"error":"boom"}`, `csm request preview: server (status 500): boom: internal (kind server, retryable true, retry after 0s)`, csmReply(200, "", `{"statusCode":500,"error":"boom","message":"internal"}`)},
		{"CSM reply", `200 job without unique_trial_key`, `csm request preview: protocol (status 200): decode preview job: no unique_trial_key (kind protocol, retryable false, retry after 0s)`, csmReply(200, "", `{"message":"Generating Mesh","data":{"status":"unprocessed"}}`)},
		{"CSM reply", `429 Retry-After: 99999999`, `csm request preview: rate_limited (status 429): slow down (kind rate_limited, retryable true, retry after 1h0m0s)`, csmReply(429, "Retry-After: 99999999", `{"message":"slow down"}`)},
		{"CSM reply", `400 "selected_spin_index must be 0..3"`, `csm request preview: bad_request (status 400): selected_spin_index must be 0..3 (kind bad_request, retryable false, retry after 0s)`, csmReply(400, "", `{"message":"selected_spin_index must be 0..3","statusCode":400}`)},
		{"receiver reply", `302 Location: http://elsewhere/`, `webhook: receiver responded 302 (redirects are not followed) (retryable true, retry after 0s)`, receiver(302, "Location: http://127.0.0.1:9/", "")},
		{"receiver reply", `410 Gone`, `webhook: receiver responded 410 Gone (retryable false, retry after 0s)`, receiver(410, "", "gone")},
		{"receiver reply", `503 Retry-After: 99999999`, `webhook: receiver responded 503 (retryable true, retry after 24h0m0s)`, receiver(503, "Retry-After: 99999999", "")},
		{"receiver reply", `200 with a 1 MiB body`, `delivered (status 200, 256 bytes of the body kept)`, receiver(200, "", strings.Repeat("y", 1<<20))},
	}
}

// badInputAPI is the HTTP API over a real producer on the test Redis.
type badInputAPI struct{ url string }

func newBadInputAPI(t *testing.T) badInputAPI {
	t.Helper()
	r := testutil.NewRedis(t)
	producer := tasks.NewClient(r.Client, tasks.ClientOptions{Namespace: r.Namespace})
	srv := httptest.NewServer(api.New(producer, api.Options{Redis: r.Client}).Handler())
	t.Cleanup(srv.Close)
	return badInputAPI{url: srv.URL}
}

func (a badInputAPI) post(body string) func(*testing.T) string {
	return func(t *testing.T) string {
		resp, err := http.Post(a.url+"/v1/previews", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		if resp.StatusCode < 400 || resp.StatusCode >= 500 {
			t.Fatalf("status %d, want a 4xx problem", resp.StatusCode)
		}
		return strconv.Itoa(resp.StatusCode) + " " + strings.TrimSpace(b.String())
	}
}

// serveOnce answers every request with status, one "Name: value" header
// and body.
func serveOnce(t *testing.T, status int, header, body string) string {
	t.Helper()
	srv := testutil.NewReplyServer(t)
	h := http.Header{}
	if k, v, ok := strings.Cut(header, ": "); ok {
		h.Set(k, v)
	}
	srv.Answer(status, h, []byte(body))
	return srv.URL
}

// csmAnswer sends one preview POST to a CSM that answers as given and
// describes the error: its text, kind, whether it is retried, and after
// how long.
func csmAnswer(t *testing.T, status int, header, body string) string {
	t.Helper()
	c, err := csm.New(csm.Options{BaseURL: serveOnce(t, status, header, body), APIKey: "csm-key-never-shown", Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.RequestPreview(context.Background(), "SESSION_1", csm.PreviewParams{})
	var ce *csm.Error
	if !errors.As(err, &ce) {
		t.Fatalf("RequestPreview = %v, want a *csm.Error", err)
	}
	if strings.Contains(err.Error(), "csm-key-never-shown") {
		t.Fatal("the error shows the API key")
	}
	return fmt.Sprintf("%s (kind %s, retryable %v, retry after %v)", err, ce.Kind, ce.Retryable, ce.RetryAfter)
}

// receiverAnswer delivers one webhook to a receiver that answers as given.
func receiverAnswer(t *testing.T, status int, header, body string) string {
	t.Helper()
	secret, err := webhook.GenerateSecret()
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := webhook.ParseSecret(secret)
	if err != nil {
		t.Fatal(err)
	}
	s := webhook.NewSender(webhook.SenderOptions{Timeout: 5 * time.Second, AllowPrivate: true})
	res, err := s.Send(context.Background(), serveOnce(t, status, header, body), webhook.NewSigner(parsed),
		webhook.Message{ID: "msg_1", Body: []byte(`{}`)}, time.Now())
	if len(res.ResponsePrefix) > 256 {
		t.Fatalf("response prefix of %d bytes kept, want at most 256", len(res.ResponsePrefix))
	}
	if err == nil {
		return fmt.Sprintf("delivered (status %d, %d bytes of the body kept)", res.StatusCode, len(res.ResponsePrefix))
	}
	var de *webhook.DeliveryError
	if !errors.As(err, &de) {
		t.Fatalf("Send = %v, want a *webhook.DeliveryError", err)
	}
	return fmt.Sprintf("%s (retryable %v, retry after %v)", err, de.Retryable, res.RetryAfter)
}
