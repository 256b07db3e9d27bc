package tasks_test

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/previewd/previewd/tasks"
)

// fuzzDecode checks the decoder contract on arbitrary bytes: it never
// panics; a failure wraps ErrMalformed; a success is a valid payload of at
// most 16 KiB whose JSON encoding decodes back to the same value.
func fuzzDecode[P interface {
	tasks.Payload
	comparable
}](t *testing.T, raw []byte) {
	t.Helper()
	var zero P
	p, err := tasks.Decode[P](asynq.NewTask(zero.TaskType(), raw))
	if err != nil {
		if !errors.Is(err, tasks.ErrMalformed) {
			t.Fatalf("Decode error %v does not wrap ErrMalformed", err)
		}
		return
	}
	if len(raw) > 16<<10 {
		t.Fatalf("Decode accepted a payload of %d bytes", len(raw))
	}
	if err := p.Validate(); err != nil {
		t.Fatalf("Decode returned %+v, which does not validate: %v", p, err)
	}
	again, err := json.Marshal(p)
	if err != nil {
		t.Fatalf("marshal %+v: %v", p, err)
	}
	back, err := tasks.Decode[P](asynq.NewTask(zero.TaskType(), again))
	if err != nil {
		t.Fatalf("re-decode of %s: %v", again, err)
	}
	if back != p {
		t.Fatalf("round trip changed the payload: %+v became %+v", p, back)
	}
	if back.TaskID() != p.TaskID() {
		t.Fatalf("round trip changed the task id: %q became %q", p.TaskID(), back.TaskID())
	}
	// The same bytes under another task type are refused.
	if _, err := tasks.Decode[P](asynq.NewTask(zero.TaskType()+"x", raw)); !errors.Is(err, tasks.ErrMalformed) {
		t.Fatalf("Decode under a wrong task type = %v, want ErrMalformed", err)
	}
}

func FuzzDecodeRequestPreview(f *testing.F) {
	for _, s := range []string{
		`{"job_id":"6ba7b810-9dad-11d1-80b4-00c04fd430c8","session_code":"SESSION_1689257215_1674078"}`,
		`{"session_code":"a","job_id":"00000000-0000-0000-0000-000000000000"}`,
		`{"job_id":"6BA7B810-9DAD-11D1-80B4-00C04FD430C8","session_code":"A-b_9"}`,
		`{"JOB_ID":"6ba7b810-9dad-11d1-80b4-00c04fd430c8","Session_Code":"x"}`,
		`{"job_id":"6ba7b810-9dad-11d1-80b4-00c04fd430c8","job_id":"x","session_code":"s"}`,
		`{"job_id":"{6ba7b810-9dad-11d1-80b4-00c04fd430c8}","session_code":"s"}`,
		`{"job_id":"6ba7b810-9dad-11d1-80b4-00c04fd430c8","session_code":"s","seq":1}`,
		`{"job_id":"6ba7b810-9dad-11d1-80b4-00c04fd430c8","session_code":"s"} {}`,
		`{"job_id":"6ba7b810-9dad-11d1-80b4-00c04fd430c8","session_code":"s\u0000"}`,
		`null`, `[]`, `""`, `{}`, `{"job_id":null}`, "",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) { fuzzDecode[tasks.RequestPreview](t, raw) })
}

func FuzzDecodePollPreview(f *testing.F) {
	for _, s := range []string{
		`{"job_id":"6ba7b810-9dad-11d1-80b4-00c04fd430c8","session_code":"SESSION_1","seq":1}`,
		`{"job_id":"6ba7b810-9dad-11d1-80b4-00c04fd430c8","session_code":"SESSION_1","seq":9223372036854775807}`,
		`{"job_id":"6ba7b810-9dad-11d1-80b4-00c04fd430c8","session_code":"SESSION_1","seq":9223372036854775808}`,
		`{"job_id":"6ba7b810-9dad-11d1-80b4-00c04fd430c8","session_code":"SESSION_1","seq":0}`,
		`{"job_id":"6ba7b810-9dad-11d1-80b4-00c04fd430c8","session_code":"SESSION_1","seq":1e2}`,
		`{"job_id":"6ba7b810-9dad-11d1-80b4-00c04fd430c8","session_code":"SESSION_1","seq":-1}`,
		`{"job_id":"6ba7b810-9dad-11d1-80b4-00c04fd430c8","session_code":"SESSION_1","seq":"2"}`,
		`{"job_id":"6ba7b810-9dad-11d1-80b4-00c04fd430c8","session_code":"SESSION_1","seq":2,"seq":3}`,
		`{"job_id":"6ba7b810-9dad-11d1-80b4-00c04fd430c8","session_code":"SESSION_1","seq":2}]`,
		`{"seq":1}`, `null`, `{`, "",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) { fuzzDecode[tasks.PollPreview](t, raw) })
}

func FuzzDecodeDeliverWebhook(f *testing.F) {
	for _, s := range []string{
		`{"job_id":"6ba7b810-9dad-11d1-80b4-00c04fd430c8","event_id":"evt_6ba7b8109dad11d180b400c04fd430c80123456789abcdef","event_type":"preview.done","destination":"job"}`,
		`{"job_id":"6ba7b810-9dad-11d1-80b4-00c04fd430c8","event_id":"evt_0b9c7a526c4e5f0e9a553a4f1f2a8d110123456789abcdef","event_type":"preview.done","destination":"job"}`,
		`{"job_id":"6ba7b810-9dad-11d1-80b4-00c04fd430c8","event_id":"evt_0123456789abcdef0123456789abcdef","event_type":"preview.done","destination":"job"}`,
		`{"job_id":"6ba7b810-9dad-11d1-80b4-00c04fd430c8","event_id":"evt_0123456789abcdef0123456789abcdef","event_type":"\u00ff\ud800","destination":"job"}`,
		`{"job_id":"6ba7b810-9dad-11d1-80b4-00c04fd430c8","event_id":"evt_0123456789abcdef0123456789abcdef","event_type":"a\u0000b","destination":"job"}`,
		`{"job_id":"6ba7b810-9dad-11d1-80b4-00c04fd430c8","event_id":"evt_0123456789ABCDEF0123456789ABCDEF","event_type":"preview.done","destination":"job"}`,
		`{"job_id":"6ba7b810-9dad-11d1-80b4-00c04fd430c8","event_id":"evt_0123456789abcdef0123456789abcdef","event_type":"preview.done","destination":"other"}`,
		`{"job_id":"6ba7b810-9dad-11d1-80b4-00c04fd430c8","event_id":"evt_0123456789abcdef0123456789abcdef","event_type":"","destination":"job"}`,
		`{"event_id":"evt_","destination":"job"}`, `[{}]`, `true`, "",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) { fuzzDecode[tasks.DeliverWebhook](t, raw) })
}

func FuzzDecodeFanoutWebhook(f *testing.F) {
	for _, s := range []string{
		`{"job_id":"6ba7b810-9dad-11d1-80b4-00c04fd430c8","event_id":"evt_0123456789abcdef0123456789abcdef","event_type":"preview.done"}`,
		`{"job_id":"6ba7b810-9dad-11d1-80b4-00c04fd430c8","event_id":"evt_0123456789abcdef0123456789abcdef","event_type":""}`,
		`{"job_id":"6ba7b810-9dad-11d1-80b4-00c04fd430c8","event_id":"evt_0123456789abcdef0123456789abcdef","event_type":"preview.done","destination":"job"}`,
		`{"job_id":"6ba7b810-9dad-11d1-80b4-00c04fd430c8","event_id":"evt_6ba7b8109dad11d180b400c04fd430c80123456789abcdef","event_type":"preview.done"}`,
		`{"job_id":"6ba7b810-9dad-11d1-80b4-00c04fd430c8","event_id":"evt_xyz","event_type":"preview.done"}`,
		`{"event_type":"preview.done"}`, `{}`, `[`, "",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) { fuzzDecode[tasks.FanoutWebhook](t, raw) })
}
