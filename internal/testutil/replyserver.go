package testutil

import (
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
)

// ReplyServer answers every request with the reply last set by Answer: a
// stand-in for an upstream or a receiver whose replies a table test or a
// fuzz target chooses. It closes when the test ends.
type ReplyServer struct {
	URL string

	mu     sync.Mutex
	status int
	header http.Header
	body   []byte
}

// NewReplyServer starts a ReplyServer answering 200 with no body.
func NewReplyServer(t testing.TB) *ReplyServer {
	t.Helper()
	s := &ReplyServer{status: http.StatusOK}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		s.mu.Lock()
		status, header, body := s.status, s.header, s.body
		s.mu.Unlock()
		for k, vs := range header {
			for _, v := range vs {
				w.Header().Add(k, v)
			}
		}
		w.WriteHeader(status)
		_, _ = w.Write(body)
	}))
	t.Cleanup(srv.Close)
	s.URL = srv.URL
	return s
}

// Answer sets the reply to every request from now on.
func (s *ReplyServer) Answer(status int, header http.Header, body []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status, s.header, s.body = status, header, body
}

// SendableHeaderValue reports whether net/http sends v as a header value
// (it refuses control characters other than tab).
func SendableHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if b := v[i]; b < 0x20 && b != '\t' || b == 0x7f {
			return false
		}
	}
	return true
}
