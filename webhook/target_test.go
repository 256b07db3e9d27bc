package webhook_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/previewd/previewd/webhook"
)

// mapResolver answers from a map that the test may change between calls;
// unknown names fail as a real resolver would, naming its server.
type mapResolver struct {
	mu      sync.Mutex
	records map[string][]netip.Addr
	lookups int
}

func (r *mapResolver) set(name string, addrs ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.records == nil {
		r.records = map[string][]netip.Addr{}
	}
	r.records[name] = nil
	for _, a := range addrs {
		r.records[name] = append(r.records[name], netip.MustParseAddr(a))
	}
}

func (r *mapResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lookups++
	if a, ok := r.records[host]; ok {
		return a, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, Server: "10.99.0.53:53", IsNotFound: true}
}

// listenOn starts a receiver on ip (any of 127.0.0.0/8 is loopback on Linux)
// and returns its port and a counter of requests.
func listenOn(t *testing.T, ip string, port int, h http.HandlerFunc) (int, func() int) {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
	if err != nil {
		t.Skipf("cannot listen on %s: %v", ip, err)
	}
	var mu sync.Mutex
	n := 0
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		n++
		mu.Unlock()
		h(w, r)
	}))
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return ln.Addr().(*net.TCPAddr).Port, func() int { mu.Lock(); defer mu.Unlock(); return n }
}

// TestSendToDialsTheResolvedAddress: the address found by Resolve is the one
// connected to, even if the name points elsewhere by the time of the dial
// (DNS rebinding between check and dial), and the name is looked up once.
func TestSendToDialsTheResolvedAddress(t *testing.T) {
	ok := func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }
	port, first := listenOn(t, "127.0.0.1", 0, ok)
	_, second := listenOn(t, "127.0.0.2", port, ok)
	res := &mapResolver{}
	res.set("hooks.example", "127.0.0.1")
	s := newLocalSender(t, webhook.SenderOptions{Timeout: 2 * time.Second, Resolver: res})

	target, err := s.Target("http://HOOKS.example.:" + strconv.Itoa(port) + "/in")
	if err != nil {
		t.Fatal(err)
	}
	if target.Host != "hooks.example" || target.Domain != "hooks.example" || target.Port != strconv.Itoa(port) {
		t.Fatalf("target = %+v", target)
	}
	target, err = s.Resolve(t.Context(), target)
	if err != nil {
		t.Fatal(err)
	}
	if target.Addr != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("resolved to %s", target.Addr)
	}
	res.set("hooks.example", "127.0.0.2") // rebinds after the check
	if _, err := s.SendTo(t.Context(), target, webhook.NewSigner(mustSecret(t)), webhook.Message{ID: "m", Body: []byte("{}")}, time.Now()); err != nil {
		t.Fatalf("SendTo: %v", err)
	}
	if first() != 1 || second() != 0 {
		t.Errorf("requests: resolved address %d, rebound address %d; want 1 and 0", first(), second())
	}
	if res.lookups != 1 {
		t.Errorf("the name was looked up %d times, want once", res.lookups)
	}
}

// TestSendToKeepsTheAddressPolicy: a target resolved to loopback is refused
// at the dial unless AllowPrivate, with no address in the error text.
func TestSendToKeepsTheAddressPolicy(t *testing.T) {
	srv, hits := newReceiver(t, func(http.ResponseWriter, *http.Request) {})
	port := srv.Listener.Addr().(*net.TCPAddr).Port
	res := &mapResolver{}
	res.set("rebind.example", "127.0.0.1")
	s := webhook.NewSender(webhook.SenderOptions{Timeout: 2 * time.Second, Resolver: res})
	t.Cleanup(s.CloseIdleConnections)
	_, err := s.Send(t.Context(), "http://rebind.example:"+strconv.Itoa(port)+"/", webhook.NewSigner(mustSecret(t)), webhook.Message{ID: "m", Body: []byte("{}")}, time.Now())
	de := asDeliveryError(t, err)
	if !de.Blocked || de.Retryable {
		t.Fatalf("DeliveryError = %+v", de)
	}
	if want := "webhook: delivery blocked: URL host resolves to a non-public address"; de.Error() != want {
		t.Errorf("Error() = %q, want %q", de.Error(), want)
	}
	if !strings.Contains(de.Detail, "127.0.0.1") {
		t.Errorf("Detail = %q, want the dialled address for the log", de.Detail)
	}
	if hits.Load() != 0 {
		t.Errorf("receiver saw %d requests", hits.Load())
	}
}

// TestDeliveryErrorsHideInternalNetwork: what an attempt log shows of a
// failed lookup or connection names neither the resolver nor the address a
// name resolved to; Detail keeps both for the operator's log.
func TestDeliveryErrorsHideInternalNetwork(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedPort := ln.Addr().(*net.TCPAddr).Port
	ln.Close() // nothing listens there now: connection refused

	res := &mapResolver{}
	res.set("internal.example", "127.0.0.1")
	s := newLocalSender(t, webhook.SenderOptions{Timeout: 2 * time.Second, Resolver: res})
	tests := []struct {
		name, url, want, detail string
	}{
		{name: "lookup fails", url: "http://missing.example/", want: "webhook: delivery failed: could not resolve the host", detail: "10.99.0.53"},
		{name: "connection refused", url: "http://internal.example:" + strconv.Itoa(closedPort) + "/",
			want: "webhook: delivery failed: could not connect to the receiver: connection refused", detail: "127.0.0.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.Send(t.Context(), tt.url, webhook.NewSigner(mustSecret(t)), webhook.Message{ID: "m", Body: []byte("{}")}, time.Now())
			de := asDeliveryError(t, err)
			if !de.Retryable || de.Blocked {
				t.Errorf("DeliveryError = %+v", de)
			}
			if de.Error() != tt.want {
				t.Errorf("Error() = %q, want %q", de.Error(), tt.want)
			}
			for _, leak := range []string{"10.99.0.53", "127.0.0.1", "resolves to"} {
				if strings.Contains(de.Error(), leak) {
					t.Errorf("Error() %q reveals %q", de.Error(), leak)
				}
			}
			if !strings.Contains(de.Detail, tt.detail) {
				t.Errorf("Detail = %q, want it to keep %q for the log", de.Detail, tt.detail)
			}
		})
	}
}

// TestSendHonoursDeliveryDisable: a receiver that answers
// "webhook-delivery: disable" asks to stop; on a non-2xx that failure is
// final, on a 2xx the message is still delivered.
func TestSendHonoursDeliveryDisable(t *testing.T) {
	tests := []struct {
		name      string
		status    int
		value     string
		disable   bool
		wantErr   bool
		retryable bool
	}{
		{name: "2xx with disable", status: http.StatusOK, value: "disable", disable: true},
		{name: "5xx with disable", status: http.StatusServiceUnavailable, value: "disable", disable: true, wantErr: true},
		{name: "case and spaces", status: http.StatusBadRequest, value: " Disable ", disable: true, wantErr: true},
		{name: "410 with disable", status: http.StatusGone, value: "disable", disable: true, wantErr: true},
		{name: "abort-message is not disable", status: http.StatusServiceUnavailable, value: "abort-message", wantErr: true, retryable: true},
		{name: "no header", status: http.StatusServiceUnavailable, wantErr: true, retryable: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, hits := newReceiver(t, func(w http.ResponseWriter, _ *http.Request) {
				if tt.value != "" {
					w.Header().Set("webhook-delivery", tt.value)
				}
				w.WriteHeader(tt.status)
			})
			s := newLocalSender(t, webhook.SenderOptions{Timeout: 2 * time.Second})
			res, err := s.Send(t.Context(), srv.URL, webhook.NewSigner(mustSecret(t)), webhook.Message{ID: "m", Body: []byte("{}")}, time.Now())
			if res.Disable != tt.disable {
				t.Errorf("Result.Disable = %v, want %v", res.Disable, tt.disable)
			}
			if hits.Load() != 1 {
				t.Errorf("receiver saw %d requests", hits.Load())
			}
			if !tt.wantErr {
				if err != nil {
					t.Fatalf("Send: %v", err)
				}
				return
			}
			de := asDeliveryError(t, err)
			if de.Retryable != tt.retryable || de.Disable != tt.disable {
				t.Errorf("DeliveryError = %+v", de)
			}
		})
	}
}
