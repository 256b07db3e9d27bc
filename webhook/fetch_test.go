package webhook_test

import (
	"errors"
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/previewd/previewd/webhook"
)

// TestFetch: a GET under the delivery rules: the body up to the cap,
// redirects and non-200 answers refused, and under the address policy a
// name that resolves to loopback is refused at the dial, the server never
// reached.
func TestFetch(t *testing.T) {
	t.Parallel()
	srv, hits := newReceiver(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/mesh.glb":
			w.Header().Set("Content-Type", "model/gltf-binary")
			_, _ = w.Write([]byte("glTF-bytes"))
		case "/big":
			_, _ = w.Write([]byte(strings.Repeat("x", 1000)))
		case "/moved":
			http.Redirect(w, r, "/mesh.glb", http.StatusFound)
		default:
			http.NotFound(w, r)
		}
	})
	s := newLocalSender(t, webhook.SenderOptions{})
	body, ctype, err := s.Fetch(t.Context(), srv.URL+"/mesh.glb", 100)
	if err != nil || string(body) != "glTF-bytes" || ctype != "model/gltf-binary" {
		t.Fatalf("fetch: %q %q %v", body, ctype, err)
	}
	if _, _, err := s.Fetch(t.Context(), srv.URL+"/big", 999); !errors.Is(err, webhook.ErrTooLarge) {
		t.Errorf("over the cap: %v", err)
	}
	for path, code := range map[string]int{"/moved": 302, "/nothing": 404} {
		_, _, err := s.Fetch(t.Context(), srv.URL+path, 100)
		if de := asDeliveryError(t, err); de.StatusCode != code {
			t.Errorf("%s: %v", path, err)
		}
	}

	before := hits.Load()
	port := srv.URL[strings.LastIndexByte(srv.URL, ':'):]
	policy := webhook.NewSender(webhook.SenderOptions{Resolver: fakeResolver(t, map[string][]netip.Addr{
		"cdn.example.": {netip.MustParseAddr("127.0.0.1")},
	})})
	for _, u := range []string{srv.URL + "/mesh.glb", "http://cdn.example" + port + "/mesh.glb"} {
		_, _, err := policy.Fetch(t.Context(), u, 100)
		if de := asDeliveryError(t, err); !de.Blocked {
			t.Errorf("%s under the policy: %v", u, err)
		}
	}
	if hits.Load() != before {
		t.Errorf("the policy let a request through")
	}
}
