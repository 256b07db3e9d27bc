package api_test

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/previewd/previewd/api"
	"github.com/previewd/previewd/internal/testutil"
	"github.com/previewd/previewd/store"
	"github.com/previewd/previewd/tasks"
)

// newAddressEnv is newAPIEnv with the address policy on, a resolver that
// makes intranet.example resolve to a private address (and bücher.example,
// in its ASCII form, to a public one), and a log the test can read.
func newAddressEnv(t *testing.T) (*apiEnv, *observer.ObservedLogs) {
	t.Helper()
	r := testutil.NewRedis(t)
	resolver := testutil.NewResolver(t, map[string][]netip.Addr{
		"intranet.example.":      {netip.MustParseAddr("10.1.2.3")},
		"xn--bcher-kva.example.": {netip.MustParseAddr("8.8.8.8")},
	})
	control := tasks.NewClient(r.Client, tasks.ClientOptions{Namespace: r.Namespace, Resolver: resolver})
	core, logs := observer.New(zap.InfoLevel)
	s := api.New(control, api.Options{Tokens: []string{token}, Redis: r.Client, Logger: zap.New(core), MaxBodyBytes: 4096})
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	doc, err := libopenapi.NewDocument(api.OpenAPIDocument())
	if err != nil {
		t.Fatal(err)
	}
	v, errs := validator.NewValidator(doc)
	if len(errs) > 0 {
		t.Fatalf("OpenAPI validator: %v", errs)
	}
	return &apiEnv{t: t, redis: r, control: control, server: s, url: srv.URL, validate: v, mu: &sync.Mutex{}}, logs
}

// TestEnqueueRefusesNonPublicURLs posts, over a real loopback server, the
// URLs an attacker would use to make previewd post inside its network
// (webhook_url) or make CSM fetch inside its own (selected_spin): each is
// refused with 422 naming the field, and no answer says what a name
// resolves to.
func TestEnqueueRefusesNonPublicURLs(t *testing.T) {
	t.Parallel()
	e, logs := newAddressEnv(t)
	tests := []struct {
		field, url string
	}{
		{"webhook_url", "http://ⓛⓞⓒⓐⓛⓗⓞⓢⓣ/hook"},
		{"webhook_url", "http://ｌｏｃａｌｈｏｓｔ:8080/hook"},
		{"webhook_url", "http://１２７.０.０.１/hook"},
		{"webhook_url", "http://127。0。0。1/hook"},
		{"webhook_url", "http://169。254。169。254/latest/meta-data/"},
		{"webhook_url", "http://intranet.example/hook"},
		{"selected_spin", "http://169.254.169.254/latest/meta-data/iam/security-credentials/"},
		{"selected_spin", "http://ⓛⓞⓒⓐⓛⓗⓞⓢⓣ/spin.png"},
		{"selected_spin", "http://127。0。0。1/spin.png"},
		{"selected_spin", "http://１２７.０.０.１/spin.png"},
		{"selected_spin", "http://localhost:9000/spin.png"},
		{"selected_spin", "http://[::ffff:10.0.0.1]/spin.png"},
		{"selected_spin", "http://0xa9fea9fe/spin.png"},
		{"selected_spin", "http://intranet.example/spin.png"},
	}
	for _, tt := range tests {
		t.Run(tt.field+" "+tt.url, func(t *testing.T) {
			e := e.in(t)
			body := map[string]any{"session_code": "SESSION_1689257215_1674078", tt.field: tt.url}
			// A non-ASCII host is an IRI, not the "uri" the document asks
			// for: such a request breaks the contract on its own.
			resp, raw := e.do(call{method: "POST", path: "/v1/previews", body: body, invalid: !isASCII(tt.url)})
			p := e.problem(resp, raw, http.StatusUnprocessableEntity, tt.field)
			for _, inside := range []string{"resolves to", "10.1.2.3"} {
				if strings.Contains(string(raw), inside) {
					t.Errorf("the answer reveals %q: %s", inside, raw)
				}
			}
			for _, f := range p.Errors {
				if f.Field == tt.field && !strings.HasPrefix(f.Message, "must") && !strings.HasPrefix(f.Message, "host") {
					t.Errorf("message %q does not read as a reason", f.Message)
				}
			}
		})
	}
	// What resolving found is in the operator's log instead.
	var logged int
	for _, entry := range logs.FilterMessage("request refused").All() {
		if d, _ := entry.ContextMap()["detail"].(string); strings.Contains(d, "intranet.example resolves to 10.1.2.3") {
			logged++
		}
	}
	if logged != 2 {
		t.Errorf("%d log entries carry the resolver's finding, want 2 (webhook_url and selected_spin)", logged)
	}
	jobs, _, err := e.control.List(t.Context(), store.ListOptions{Limit: 10})
	if err != nil || len(jobs) != 0 {
		t.Fatalf("after refusals: %d jobs (%v), want none", len(jobs), err)
	}
}

// TestEnqueueStoresIDNInASCII: an international host is accepted, checked
// and stored in the ASCII form that is dialled (or sent to CSM).
func TestEnqueueStoresIDNInASCII(t *testing.T) {
	t.Parallel()
	e, _ := newAddressEnv(t)
	body := map[string]any{
		"session_code":  "SESSION_1689257215_1674078",
		"webhook_url":   "https://bücher.example/hook?token=t1",
		"selected_spin": "https://BÜCHER.example/spins/1.png",
	}
	resp, raw := e.do(call{method: "POST", path: "/v1/previews", body: body, invalid: true})
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create: %d %s", resp.StatusCode, raw)
	}
	job := decode[store.Job](t, raw)
	if job.WebhookURL != "https://xn--bcher-kva.example/hook?token=t1" || job.SelectedSpin != "https://xn--bcher-kva.example/spins/1.png" {
		t.Fatalf("stored webhook_url %q, selected_spin %q; want the ASCII forms", job.WebhookURL, job.SelectedSpin)
	}
}

// TestListReducesWebhookURLs: a list shows every caller's jobs, so each
// webhook_url is reduced to its origin; the job itself keeps it whole.
func TestListReducesWebhookURLs(t *testing.T) {
	t.Parallel()
	e := newAPIEnv(t)
	const secretURL = "https://8.8.8.8:8443/services/T0/B0/pathsecret?token=querysecret"
	resp, raw := e.do(call{method: "POST", path: "/v1/previews", body: map[string]any{"session_code": "SESSION_1", "webhook_url": secretURL}})
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create: %d %s", resp.StatusCode, raw)
	}
	created := decode[store.Job](t, raw)

	resp, raw = e.do(call{method: "GET", path: "/v1/previews"})
	list := decode[api.JobList](t, raw)
	if resp.StatusCode != http.StatusOK || len(list.Items) != 1 || list.Items[0].WebhookURL != "https://8.8.8.8:8443/" {
		t.Fatalf("list: %d %s", resp.StatusCode, raw)
	}
	for _, secret := range []string{"pathsecret", "querysecret"} {
		if strings.Contains(string(raw), secret) {
			t.Errorf("the list carries %q: %s", secret, raw)
		}
	}
	_, raw = e.do(call{method: "GET", path: "/v1/previews/" + created.ID})
	if got := decode[store.Job](t, raw); got.WebhookURL != secretURL {
		t.Errorf("GET of the job: webhook_url %q, want it whole", got.WebhookURL)
	}
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
