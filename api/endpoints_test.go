package api_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	"go.uber.org/zap/zaptest"

	"github.com/previewd/previewd/api"
	"github.com/previewd/previewd/internal/testutil"
	"github.com/previewd/previewd/store"
	"github.com/previewd/previewd/tasks"
)

// newEndpointsEnv is a real API server on loopback whose producer allows
// at most maxEndpoints endpoints.
func newEndpointsEnv(t *testing.T, maxEndpoints int) *apiEnv {
	t.Helper()
	r := testutil.NewRedis(t)
	control := tasks.NewClient(r.Client, tasks.ClientOptions{Namespace: r.Namespace, MaxEndpoints: maxEndpoints})
	s := api.New(control, api.Options{Tokens: []string{token}, Redis: r.Client, Logger: zaptest.NewLogger(t), MaxBodyBytes: 4096})
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
	return &apiEnv{t: t, redis: r, control: control, server: s, url: srv.URL, validate: v, mu: &sync.Mutex{}}
}

// postEndpoint creates an endpoint without the test helpers, so that it
// can run on any goroutine.
func postEndpoint(url, path string) (int, []byte, error) {
	req, err := http.NewRequest("POST", url+"/v1/endpoints", strings.NewReader(`{"url":"https://8.8.8.8/`+path+`"}`))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, err = b.ReadFrom(resp.Body)
	return resp.StatusCode, b.Bytes(), err
}

// TestEndpointCapHoldsUnderConcurrentCreators: creators racing each other
// past the cap get exactly cap endpoints between them; the rest are
// answered 409 with a problem that names the limit and the setting. The cap
// counts endpoints that exist: deleting one makes room for one.
func TestEndpointCapHoldsUnderConcurrentCreators(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name          string
		max, creators int
	}{
		{name: "cap+1 creators", max: 10, creators: 11},
		{name: "many more creators than the cap", max: 5, creators: 60},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEndpointsEnv(t, tc.max)
			statuses := make([]int, tc.creators)
			bodies := make([][]byte, tc.creators)
			errs := make([]error, tc.creators)
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i := range tc.creators {
				wg.Go(func() {
					<-start
					statuses[i], bodies[i], errs[i] = postEndpoint(e.url, "hook"+strconv.Itoa(i))
				})
			}
			close(start)
			wg.Wait()
			created, refused := 0, 0
			for i, st := range statuses {
				switch {
				case errs[i] != nil:
					t.Fatalf("creator %d: %v", i, errs[i])
				case st == http.StatusCreated:
					created++
				case st == http.StatusConflict:
					refused++
					p := decode[api.Problem](t, bodies[i])
					if !strings.Contains(p.Detail, strconv.Itoa(tc.max)) || !strings.Contains(p.Detail, "PREVIEWD_MAX_ENDPOINTS") || !strings.Contains(p.Detail, "--max-endpoints") {
						t.Errorf("the 409 does not name the limit and the setting: %s", bodies[i])
					}
				default:
					t.Fatalf("creator %d: %d %s", i, st, bodies[i])
				}
			}
			if created != tc.max || refused != tc.creators-tc.max {
				t.Fatalf("%d created and %d refused of %d creators, want exactly the cap %d created", created, refused, tc.creators, tc.max)
			}
			all, err := e.control.Endpoints(t.Context())
			if err != nil || len(all) != tc.max {
				t.Fatalf("%d endpoints exist (%v), want %d", len(all), err, tc.max)
			}
			// A refused creation leaves no record behind.
			if n := countKeys(t, e, e.redis.Namespace+":endpoint:*"); n != tc.max {
				t.Fatalf("%d endpoint records in Redis, want %d", n, tc.max)
			}

			// The answer at the cap, checked against the OpenAPI document.
			resp, body := e.do(call{method: "POST", path: "/v1/endpoints", body: map[string]any{"url": "https://8.8.8.8/one-more"}})
			e.problem(resp, body, http.StatusConflict, "")
			if resp, _ = e.do(call{method: "DELETE", path: "/v1/endpoints/" + all[0].ID}); resp.StatusCode != http.StatusNoContent {
				t.Fatalf("delete: %d", resp.StatusCode)
			}
			if resp, body = e.do(call{method: "POST", path: "/v1/endpoints", body: map[string]any{"url": "https://8.8.8.8/after-delete"}}); resp.StatusCode != http.StatusCreated {
				t.Fatalf("after a delete: %d %s", resp.StatusCode, body)
			}
		})
	}
}

func countKeys(t *testing.T, e *apiEnv, pattern string) int {
	t.Helper()
	// A test's own namespace: a SCAN over it is fine here.
	n := 0
	iter := e.redis.Client.Scan(t.Context(), 0, pattern, 100).Iterator()
	for iter.Next(t.Context()) {
		if !strings.HasSuffix(iter.Val(), ":messages") {
			n++
		}
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestEndpointsPaging: GET /v1/endpoints pages with limit and cursor; a
// walk with any page size sees every endpoint exactly once, no page is
// larger than asked, and the last page has no next_cursor.
func TestEndpointsPaging(t *testing.T) {
	t.Parallel()
	e := newEndpointsEnv(t, 100)
	const total = 23
	want := map[string]bool{}
	for i := range total {
		resp, body := e.do(call{method: "POST", path: "/v1/endpoints", body: map[string]any{"url": fmt.Sprintf("https://8.8.8.8/h%d", i)}})
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("create: %d %s", resp.StatusCode, body)
		}
		want[decode[api.EndpointWithSecret](t, body).ID] = true
	}
	for _, limit := range []int{1, 2, 5, 22, 23, 200} {
		t.Run("limit "+strconv.Itoa(limit), func(t *testing.T) {
			e := e.in(t)
			seen := map[string]int{}
			cursor, pages := "", 0
			for {
				path := "/v1/endpoints?limit=" + strconv.Itoa(limit)
				if cursor != "" {
					path += "&cursor=" + cursor
				}
				resp, body := e.do(call{method: "GET", path: path})
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("%s: %d %s", path, resp.StatusCode, body)
				}
				if bytes.Contains(body, []byte("whsec_")) {
					t.Fatal("a listing shows a secret")
				}
				page := decode[api.EndpointList](t, body)
				if len(page.Items) > limit {
					t.Fatalf("page of %d items for limit %d", len(page.Items), limit)
				}
				for _, ep := range page.Items {
					seen[ep.ID]++
				}
				if pages++; pages > total+1 {
					t.Fatal("the walk does not end")
				}
				if page.NextCursor == "" {
					break
				}
				cursor = page.NextCursor
			}
			for id, n := range seen {
				if n != 1 || !want[id] {
					t.Errorf("endpoint %s seen %d times (known: %v)", id, n, want[id])
				}
			}
			if len(seen) != total {
				t.Fatalf("the walk saw %d endpoints, want %d", len(seen), total)
			}
			if wantPages := (total + limit - 1) / limit; pages != wantPages {
				t.Errorf("%d pages, want %d", pages, wantPages)
			}
		})
	}
	// Without a limit: the default page of 50 holds them all.
	_, body := e.do(call{method: "GET", path: "/v1/endpoints"})
	if page := decode[api.EndpointList](t, body); len(page.Items) != total || page.NextCursor != "" {
		t.Fatalf("default page: %d items, next %q", len(page.Items), page.NextCursor)
	}
	for _, tc := range []struct{ query, field string }{
		{"limit=0", "limit"}, {"limit=201", "limit"}, {"limit=ten", "limit"},
		{"cursor=not-a-cursor", "cursor"}, {"cursor=ZXBfMTIz", "cursor"},
	} {
		resp, body := e.do(call{method: "GET", path: "/v1/endpoints?" + tc.query, invalid: tc.field == "limit"})
		e.problem(resp, body, http.StatusBadRequest, tc.field)
	}
}

// TestV1aEndpointsAPI: an endpoint created with signature_version v1a
// answers its whpk_ public key (never a secret), rotation answers a new
// public key, and no answer ever carries the whsk_ private key previewd
// keeps.
func TestV1aEndpointsAPI(t *testing.T) {
	t.Parallel()
	e := newEndpointsEnv(t, 100)
	resp, body := e.do(call{method: "POST", path: "/v1/endpoints", body: map[string]any{"url": "https://8.8.8.8/ed", "signature_version": "v1a"}})
	created := decode[api.EndpointWithSecret](t, body)
	if resp.StatusCode != http.StatusCreated || created.SignatureVersion != "v1a" || !strings.HasPrefix(created.PublicKey, "whpk_") || created.Secret != "" {
		t.Fatalf("create v1a: %d %s", resp.StatusCode, body)
	}
	answers := [][]byte{body}
	_, body = e.do(call{method: "GET", path: "/v1/endpoints/" + created.ID})
	if ep := decode[store.Endpoint](t, body); ep.SignatureVersion != "v1a" {
		t.Fatalf("get: %s", body)
	}
	answers = append(answers, body)
	_, body = e.do(call{method: "POST", path: "/v1/endpoints/" + created.ID + "/rotate-secret"})
	rotated := decode[api.EndpointWithSecret](t, body)
	if !strings.HasPrefix(rotated.PublicKey, "whpk_") || rotated.PublicKey == created.PublicKey || rotated.Secret != "" {
		t.Fatalf("rotate v1a: %s", body)
	}
	answers = append(answers, body)
	_, body = e.do(call{method: "GET", path: "/v1/endpoints"})
	answers = append(answers, body)

	stored, err := e.control.Endpoint(t.Context(), created.ID)
	if err != nil || len(stored.Secrets) != 2 {
		t.Fatalf("stored: %v %d keys", err, len(stored.Secrets))
	}
	for _, s := range stored.Secrets {
		if !strings.HasPrefix(s.Value, "whsk_") {
			t.Fatalf("a v1a endpoint stores a key of another kind (%.6s…)", s.Value)
		}
		for _, a := range answers {
			if bytes.Contains(a, []byte(strings.TrimPrefix(s.Value, "whsk_")[:16])) || bytes.Contains(a, []byte("whsk_")) {
				t.Fatalf("an answer carries the private key: %s", a)
			}
		}
	}
	// v1 stays the default.
	_, body = e.do(call{method: "POST", path: "/v1/endpoints", body: map[string]any{"url": "https://8.8.8.8/hmac"}})
	if ep := decode[api.EndpointWithSecret](t, body); ep.SignatureVersion != "v1" || !strings.HasPrefix(ep.Secret, "whsec_") || ep.PublicKey != "" {
		t.Fatalf("default endpoint: %s", body)
	}
	for _, tc := range []struct {
		body  map[string]any
		field string
	}{
		{map[string]any{"url": "https://8.8.8.8/x", "signature_version": "v2"}, "signature_version"},
		{map[string]any{"url": "https://8.8.8.8/x", "signature_version": "v1a", "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}, "secret"},
	} {
		resp, body := e.do(call{method: "POST", path: "/v1/endpoints", body: tc.body, invalid: tc.field == "signature_version"})
		e.problem(resp, body, http.StatusUnprocessableEntity, tc.field)
	}
	var list struct{ Items []json.RawMessage }
	_, body = e.do(call{method: "GET", path: "/v1/endpoints"})
	if err := json.Unmarshal(body, &list); err != nil || len(list.Items) != 2 {
		t.Fatalf("refused creations made endpoints: %s", body)
	}
}
