package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/previewd/previewd/csmsim"
	"github.com/previewd/previewd/internal/testutil"
	"github.com/previewd/previewd/store"
	"github.com/previewd/previewd/tasks"
)

// echoKey is the CSM API key of TestEchoedKeyReachesNoRecord: letters that
// occur in no hex, UUID or timestamp, so that four of them in a row can
// only have come from the key.
const echoKey = "ZQXJqzvkWYJXqQZVkwYZ"

// echoFiller is what the echo fault puts before the key: its presence
// shows the echoed message reached the record (cut, here, within or just
// after "[redacted]").
var echoFiller = strings.Repeat(".", 200)

// keyPiece returns the longest prefix or suffix of key, four characters or
// more, that text contains, "" when none.
func keyPiece(text, key string) string {
	for n := len(key); n >= 4; n-- {
		if strings.Contains(text, key[:n]) {
			return key[:n]
		}
		if strings.Contains(text, key[len(key)-n:]) {
			return key[len(key)-n:]
		}
	}
	return ""
}

// TestEchoedKeyReachesNoRecord: CSM (or a proxy before it) echoes our API
// key in its error message at offsets where the 300-byte cut of messages
// falls inside the key. No piece of the key reaches the job's stored error
// (a refused POST fails the job), asynq's last_err (a 503 on the session
// read is retried) or the process's log. Before the fix the message was
// cut before the key was scrubbed, and its first characters survived.
func TestEchoedKeyReachesNoRecord(t *testing.T) {
	t.Parallel()
	r := testutil.NewRedis(t)
	sim, simURL := testutil.NewSim(t, csmsim.Options{APIKey: echoKey})
	c := newCLI(t, r, simURL)
	c.env["PREVIEWD_CSM_API_KEY"] = echoKey
	const apiToken = "echo-key-token-8d2f6a"
	c.env["PREVIEWD_API_TOKENS"] = apiToken
	c.env["PREVIEWD_LOG_LEVEL"] = "info"
	var log syncBuffer
	call, _ := startServe(t, c, freeAddr(t), apiToken, &log)

	enqueue := func(f csmsim.Fault) string {
		code := fmt.Sprintf("SESSION_ECHO_%s", testutil.RandomHex(4))
		sim.AddSession(code, csmsim.SessionConfig{Faults: []csmsim.Fault{f}})
		status, body := call("POST", "/v1/previews", map[string]any{"session_code": code, "selected_spin_index": 0})
		if status != 201 {
			t.Fatalf("POST /v1/previews: %d %s", status, body)
		}
		var j store.Job
		_ = json.Unmarshal(body, &j)
		return j.ID
	}
	// The client's messages read "Service Unavailable: <message>" and
	// "Bad Request: <message>": these offsets put the key across byte 300.
	var failed, retrying []string
	for _, k := range []int{262, 270, 277} {
		retrying = append(retrying, enqueue(csmsim.Fault{Endpoint: csmsim.EndpointGetSession, Kind: csmsim.FaultEchoKey, EchoOffset: k, Times: 1000}))
	}
	for _, k := range []int{270, 278, 285} {
		failed = append(failed, enqueue(csmsim.Fault{Endpoint: csmsim.EndpointPreview, Kind: csmsim.FaultEchoKey, EchoOffset: k, EchoStatus: 400}))
	}

	for _, id := range failed {
		var body []byte
		testutil.Eventually(t, 30*time.Second, "job "+id+" failed", func() bool {
			_, body = call("GET", "/v1/previews/"+id, nil)
			var j store.Job
			_ = json.Unmarshal(body, &j)
			return j.Status == store.StatusFailed
		})
		if !strings.Contains(string(body), echoFiller) {
			t.Errorf("job %s's error does not show the echo: %s", id, body)
		}
		if p := keyPiece(string(body), echoKey); p != "" {
			t.Errorf("job %s carries %q of the key: %s", id, p, body)
		}
	}

	insp := asynq.NewInspectorFromRedisClient(r.Client)
	q := tasks.QueuesFor(r.Namespace)
	var lastErrs []string
	testutil.Eventually(t, 30*time.Second, "every session read to be retried with its error", func() bool {
		infos, err := insp.ListRetryTasks(q.Previews)
		if err != nil {
			return false
		}
		lastErrs = lastErrs[:0]
		for _, ti := range infos {
			if ti.LastErr != "" {
				lastErrs = append(lastErrs, ti.LastErr)
			}
		}
		return len(lastErrs) == len(retrying)
	})
	for _, e := range lastErrs {
		if p := keyPiece(e, echoKey); p != "" || !strings.Contains(e, echoFiller) {
			t.Errorf("asynq last_err carries %q of the key (or not the echo): %s", p, e)
		}
	}
	for _, id := range retrying {
		if _, body := call("GET", "/v1/previews/"+id, nil); keyPiece(string(body), echoKey) != "" {
			t.Errorf("job %s carries a piece of the key: %s", id, body)
		}
	}
	if p := keyPiece(log.String(), echoKey); p != "" {
		t.Errorf("the log carries %q of the key", p)
	}
}
