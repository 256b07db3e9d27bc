package csm_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/previewd/previewd/csm"
)

// deadlineRecorder is a transport that answers nothing: it records the
// deadline of the request it was given and fails it.
type deadlineRecorder struct {
	deadline time.Time
	ok       bool
}

func (d *deadlineRecorder) RoundTrip(r *http.Request) (*http.Response, error) {
	d.deadline, d.ok = r.Context().Deadline()
	return nil, errors.New("recorded")
}

// TestEveryCallIsBounded: whatever Timeout says (zero and negative mean the
// default), each call to CSM runs under a deadline of that length, so a
// request CSM never answers cannot hold a job past it. A zero timeout
// taken literally would fail every call at once; a missing one would let a
// hung POST stall its job.
func TestEveryCallIsBounded(t *testing.T) {
	cases := []struct {
		name    string
		timeout time.Duration
		want    time.Duration
	}{
		{"default", 0, 30 * time.Second},
		{"negative means default", -time.Second, 30 * time.Second},
		{"set", 7 * time.Second, 7 * time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec := &deadlineRecorder{}
			c, err := csm.New(csm.Options{BaseURL: "http://csm.invalid", APIKey: "k", Timeout: tc.timeout, Transport: rec})
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			// No deadline of our own: the client's is the only one.
			if _, err := c.GetSession(context.Background(), "SESSION_1"); err == nil {
				t.Fatal("GetSession through a failing transport succeeded")
			}
			if !rec.ok {
				t.Fatal("the request had no deadline")
			}
			// The deadline was set between start and now; compare its
			// length with a margin for the time the call itself took.
			got := rec.deadline.Sub(start)
			if got < tc.want || got > tc.want+time.Since(start) {
				t.Fatalf("request deadline %v after the call began, want %v", got, tc.want)
			}
		})
	}
}
