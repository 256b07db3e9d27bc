package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap/zaptest"

	"github.com/previewd/previewd/api"
	"github.com/previewd/previewd/internal/testutil"
	"github.com/previewd/previewd/metrics"
	"github.com/previewd/previewd/store"
	"github.com/previewd/previewd/tasks"
)

const (
	token         = "api-token-0f4e8b2a"
	readOnlyToken = "ro-token-77c1d9"
)

// apiEnv is a real API server on loopback over a real Redis namespace,
// with every request and response checked against the OpenAPI document.
type apiEnv struct {
	t        *testing.T
	redis    *testutil.Redis
	control  *tasks.Client
	server   *api.Server
	url      string
	metrics  *metrics.Metrics
	validate validator.Validator
	mu       *sync.Mutex // libopenapi-validator is not safe for concurrent use
}

// in returns the env reporting to t (a subtest).
func (e *apiEnv) in(t *testing.T) *apiEnv {
	c := *e
	c.t = t
	return &c
}

func newAPIEnv(t *testing.T, tokens ...string) *apiEnv {
	t.Helper()
	return newAPIEnvOn(t, testutil.NewRedis(t), tokens...)
}

// newDashboardEnv is newAPIEnv on a Redis of the test's own: the dashboard
// lists every queue of its Redis.
func newDashboardEnv(t *testing.T, tokens ...string) *apiEnv {
	t.Helper()
	return newAPIEnvOn(t, testutil.NewPrivateRedis(t), tokens...)
}

func newAPIEnvOn(t *testing.T, r *testutil.Redis, tokens ...string) *apiEnv {
	t.Helper()
	control := tasks.NewClient(r.Client, tasks.ClientOptions{Namespace: r.Namespace, AllowPrivateWebhooks: false})
	q := tasks.QueuesFor(r.Namespace)
	m := metrics.New(metrics.Sources{
		Inspector: asynq.NewInspectorFromRedisClient(r.Client), Queues: q.All(), Webhooks: q.Deliveries(),
		Store: control.Store(),
	})
	if tokens == nil {
		tokens = []string{token}
	}
	s := api.New(control, api.Options{
		Tokens: tokens, ReadOnlyTokens: []string{readOnlyToken}, Redis: r.Client,
		Metrics: m.Handler(), Recorder: m, Dashboard: api.NewDashboard(r.Client),
		Logger: zaptest.NewLogger(t), MaxBodyBytes: 4096,
	})
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
	return &apiEnv{t: t, redis: r, control: control, server: s, url: srv.URL, metrics: m, validate: v, mu: &sync.Mutex{}}
}

type call struct {
	method, path string
	body         any // marshalled to JSON unless a string or []byte
	header       map[string]string
	token        string // "" means the default token; "-" means none
	invalid      bool   // the request itself breaks the contract: do not validate it
	undocumented bool   // a path the document does not describe: check neither side
}

// do sends a request and checks it and its response against the OpenAPI
// document. It returns the response (body already read) and the body.
func (e *apiEnv) do(c call) (*http.Response, []byte) {
	e.t.Helper()
	var raw []byte
	switch b := c.body.(type) {
	case nil:
	case string:
		raw = []byte(b)
	case []byte:
		raw = b
	default:
		var err error
		if raw, err = json.Marshal(b); err != nil {
			e.t.Fatal(err)
		}
	}
	req, err := http.NewRequest(c.method, e.url+c.path, bytes.NewReader(raw))
	if err != nil {
		e.t.Fatal(err)
	}
	if raw != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	switch c.token {
	case "":
		req.Header.Set("Authorization", "Bearer "+token)
	case "-":
	default:
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	for k, v := range c.header {
		req.Header.Set(k, v)
	}
	if !c.invalid && !c.undocumented {
		check := req.Clone(context.Background())
		check.Body = io.NopCloser(bytes.NewReader(raw))
		e.mu.Lock()
		ok, errs := e.validate.ValidateHttpRequest(check)
		e.mu.Unlock()
		if !ok {
			e.t.Fatalf("%s %s breaks the OpenAPI document: %v", c.method, c.path, describe(errs))
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		e.t.Fatal(err)
	}
	if c.undocumented {
		resp.Body = io.NopCloser(bytes.NewReader(body))
		return resp, body
	}
	check := req.Clone(context.Background())
	check.Body = io.NopCloser(bytes.NewReader(raw))
	resp.Body = io.NopCloser(bytes.NewReader(body))
	e.mu.Lock()
	ok, errs := e.validate.ValidateHttpResponse(check, resp)
	e.mu.Unlock()
	if !ok {
		e.t.Fatalf("the answer to %s %s (%d) breaks the OpenAPI document: %v\n%s", c.method, c.path, resp.StatusCode, describe(errs), body)
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp, body
}

func describe[E interface{ Error() string }](errs []E) string {
	var parts []string
	for _, e := range errs {
		parts = append(parts, e.Error())
	}
	return strings.Join(parts, "; ")
}

func decode[T any](t *testing.T, body []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("decode %T: %v\n%s", v, err, body)
	}
	return v
}

// problem asserts an RFC 9457 answer with the given status naming field.
func (e *apiEnv) problem(resp *http.Response, body []byte, status int, field string) api.Problem {
	e.t.Helper()
	if resp.StatusCode != status {
		e.t.Fatalf("status %d, want %d: %s", resp.StatusCode, status, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
		e.t.Fatalf("content type %q, want application/problem+json", ct)
	}
	p := decode[api.Problem](e.t, body)
	if p.Status != status || p.Title == "" {
		e.t.Fatalf("problem %+v", p)
	}
	if field != "" {
		for _, f := range p.Errors {
			if f.Field == field {
				return p
			}
		}
		e.t.Fatalf("problem does not name %q: %+v", field, p)
	}
	return p
}

func TestOpenAPIDocumentIsValid(t *testing.T) {
	doc, err := libopenapi.NewDocument(api.OpenAPIDocument())
	if err != nil {
		t.Fatal(err)
	}
	if v := doc.GetVersion(); v != "3.1.0" {
		t.Fatalf("OpenAPI version %s, want 3.1.0", v)
	}
	v, errs := validator.NewValidator(doc)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	if ok, verrs := v.ValidateDocument(); !ok {
		t.Fatalf("the document breaks the OpenAPI 3.1 schema: %v", describe(verrs))
	}
	// Every route the server handles is documented.
	var spec struct {
		Paths map[string]map[string]any `json:"paths"`
	}
	if err := json.Unmarshal(api.OpenAPIDocument(), &spec); err != nil {
		t.Fatal(err)
	}
	for _, route := range api.Routes() {
		method, path, _ := strings.Cut(route, " ")
		if _, ok := spec.Paths[path][strings.ToLower(method)]; !ok {
			t.Errorf("route %s is not in the OpenAPI document", route)
		}
	}
}

var (
	validRequest = map[string]any{"session_code": "SESSION_1689257215_1674078", "selected_spin_index": 1, "scaled_bbox": []float64{1, 1.5, 0.8}, "external_id": "asset-1"}
)

func TestPreviewsAPI(t *testing.T) {
	t.Parallel()
	e := newAPIEnv(t)

	resp, body := e.do(call{method: "POST", path: "/v1/previews", body: validRequest, header: map[string]string{"Idempotency-Key": "k-1"}})
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create: %d %s", resp.StatusCode, body)
	}
	job := decode[store.Job](t, body)
	if job.Status != store.StatusQueued || job.IdempotencyKey != "k-1" || resp.Header.Get("Location") != "/v1/previews/"+job.ID {
		t.Fatalf("created %+v, Location %q", job, resp.Header.Get("Location"))
	}
	// The same key again: the same job, and no second job or task.
	resp, body = e.do(call{method: "POST", path: "/v1/previews", body: validRequest, header: map[string]string{"Idempotency-Key": "k-1"}})
	if again := decode[store.Job](t, body); resp.StatusCode != http.StatusOK || again.ID != job.ID || resp.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("repeat: %d %s", resp.StatusCode, body)
	}
	// The same key with another body: 409.
	other := map[string]any{"session_code": "SESSION_OTHER"}
	resp, body = e.do(call{method: "POST", path: "/v1/previews", body: other, header: map[string]string{"Idempotency-Key": "k-1"}})
	e.problem(resp, body, http.StatusConflict, "idempotency_key")

	resp, body = e.do(call{method: "GET", path: "/v1/previews/" + job.ID})
	if got := decode[store.Job](t, body); resp.StatusCode != 200 || got.ID != job.ID {
		t.Fatalf("get: %d %s", resp.StatusCode, body)
	}
	resp, body = e.do(call{method: "GET", path: "/v1/previews/3f0c0000-0000-4000-8000-000000000000"})
	e.problem(resp, body, http.StatusNotFound, "")

	// Listing, filtering and paging.
	var ids []string
	for i := range 4 {
		_, body := e.do(call{method: "POST", path: "/v1/previews", body: map[string]any{"session_code": "SESSION_LIST_" + string(rune('A'+i))}})
		ids = append(ids, decode[store.Job](t, body).ID)
	}
	if resp, _ := e.do(call{method: "POST", path: "/v1/previews/" + ids[0] + "/cancel"}); resp.StatusCode != 200 {
		t.Fatalf("cancel: %d", resp.StatusCode)
	}
	var seen []string
	cursor := ""
	for page := 0; ; page++ {
		path := "/v1/previews?limit=2"
		if cursor != "" {
			path += "&cursor=" + cursor
		}
		resp, body = e.do(call{method: "GET", path: path})
		list := decode[api.JobList](t, body)
		if resp.StatusCode != 200 || len(list.Items) > 2 || page > 5 {
			t.Fatalf("page %d: %d %s", page, resp.StatusCode, body)
		}
		for _, j := range list.Items {
			seen = append(seen, j.ID)
		}
		if cursor = list.NextCursor; cursor == "" {
			break
		}
	}
	if len(seen) != 5 || seen[0] != ids[3] || seen[4] != job.ID {
		t.Fatalf("paged through %v; want the 5 jobs newest first", seen)
	}
	_, body = e.do(call{method: "GET", path: "/v1/previews?status=canceled"})
	if list := decode[api.JobList](t, body); len(list.Items) != 1 || list.Items[0].ID != ids[0] {
		t.Fatalf("status=canceled: %s", body)
	}
	_, body = e.do(call{method: "GET", path: "/v1/previews?status=queued&limit=200"})
	if list := decode[api.JobList](t, body); len(list.Items) != 4 {
		t.Fatalf("status=queued: %d jobs", len(list.Items))
	}

	// Cancel: once, again (no-op), then the webhooks of the job.
	resp, body = e.do(call{method: "POST", path: "/v1/previews/" + job.ID + "/cancel"})
	if c := decode[store.Job](t, body); resp.StatusCode != 200 || c.Status != store.StatusCanceled {
		t.Fatalf("cancel: %d %s", resp.StatusCode, body)
	}
	resp, _ = e.do(call{method: "POST", path: "/v1/previews/" + job.ID + "/cancel"})
	if resp.StatusCode != 200 {
		t.Fatalf("cancel again: %d", resp.StatusCode)
	}
	resp, body = e.do(call{method: "GET", path: "/v1/previews/" + job.ID + "/webhooks"})
	if resp.StatusCode != 200 || decode[api.MessageList](t, body).Items == nil {
		t.Fatalf("webhooks: %d %s", resp.StatusCode, body)
	}
	// A done job cannot be canceled.
	if _, err := e.control.Store().Update(context.Background(), ids[1], func(j *store.Job, now time.Time) (store.Change, error) {
		j.Finish(store.StatusDone, now, nil, "")
		return store.Change{}, nil
	}); err != nil {
		t.Fatal(err)
	}
	resp, body = e.do(call{method: "POST", path: "/v1/previews/" + ids[1] + "/cancel"})
	e.problem(resp, body, http.StatusConflict, "")
}

func TestBadRequestsNameTheProblem(t *testing.T) {
	t.Parallel()
	e := newAPIEnv(t)
	cases := []struct {
		name   string
		c      call
		status int
		field  string
	}{
		{"no token", call{method: "GET", path: "/v1/previews", token: "-", invalid: true}, 401, ""},
		{"wrong token", call{method: "GET", path: "/v1/previews", token: "nope"}, 401, ""},
		{"read-only token is not an API token", call{method: "GET", path: "/v1/previews", token: readOnlyToken}, 401, ""},
		{"unknown field", call{method: "POST", path: "/v1/previews", body: `{"session_code":"S1","spin":2}`, invalid: true}, 400, "spin"},
		{"wrong type", call{method: "POST", path: "/v1/previews", body: `{"session_code":"S1","selected_spin_index":"two"}`, invalid: true}, 400, "selected_spin_index"},
		{"not JSON", call{method: "POST", path: "/v1/previews", body: `{selected_spin_index: 0 selected_spin: "x"}`, invalid: true}, 400, ""},
		{"trailing data", call{method: "POST", path: "/v1/previews", body: `{"session_code":"S1"}{}`, invalid: true}, 400, ""},
		{"invalid values", call{method: "POST", path: "/v1/previews", body: map[string]any{"session_code": "a/b", "selected_spin_index": 7}, invalid: true}, 422, "selected_spin_index"},
		{"private webhook", call{method: "POST", path: "/v1/previews", body: map[string]any{"session_code": "S1", "webhook_url": "http://169.254.169.254/x"}}, 422, "webhook_url"},
		{"header and body keys differ", call{method: "POST", path: "/v1/previews", body: map[string]any{"session_code": "S1", "idempotency_key": "a"}, header: map[string]string{"Idempotency-Key": "b"}}, 400, "idempotency_key"},
		{"too large", call{method: "POST", path: "/v1/previews", body: map[string]any{"session_code": "S1", "external_id": strings.Repeat("x", 5000)}, invalid: true}, 413, ""},
		{"wrong content type", call{method: "POST", path: "/v1/previews", body: `session_code=S1`, header: map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, invalid: true}, 415, ""},
		{"bad status", call{method: "GET", path: "/v1/previews?status=exploded", invalid: true}, 400, "status"},
		{"bad limit", call{method: "GET", path: "/v1/previews?limit=0", invalid: true}, 400, "limit"},
		{"bad cursor", call{method: "GET", path: "/v1/previews?cursor=bm90LWEtY3Vyc29y", invalid: true}, 400, "cursor"},
		{"endpoint on loopback", call{method: "POST", path: "/v1/endpoints", body: map[string]any{"url": "http://127.0.0.1:9000/h"}}, 422, "url"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := e.in(t)
			resp, body := e.do(tc.c)
			e.problem(resp, body, tc.status, tc.field)
		})
	}
	if keys := e.redis.Keys(t); len(keys) != 0 {
		t.Fatalf("refused requests left keys: %v", keys)
	}
}

func TestEndpointsAPI(t *testing.T) {
	t.Parallel()
	e := newAPIEnv(t)
	resp, body := e.do(call{method: "POST", path: "/v1/endpoints", body: map[string]any{"url": "https://8.8.8.8/hooks", "event_types": []string{"preview.done"}, "description": "orders"}})
	created := decode[api.EndpointWithSecret](t, body)
	if resp.StatusCode != 201 || !strings.HasPrefix(created.Secret, "whsec_") || !created.Enabled {
		t.Fatalf("create: %d %s", resp.StatusCode, body)
	}
	_, body = e.do(call{method: "GET", path: "/v1/endpoints"})
	if strings.Contains(string(body), created.Secret) || len(decode[api.EndpointList](t, body).Items) != 1 {
		t.Fatalf("list: %s", body)
	}
	_, body = e.do(call{method: "GET", path: "/v1/endpoints/" + created.ID})
	if strings.Contains(string(body), "whsec_") {
		t.Fatal("get shows the secret")
	}
	_, body = e.do(call{method: "POST", path: "/v1/endpoints/" + created.ID + "/disable", body: map[string]any{"reason": "maintenance"}})
	if ep := decode[store.Endpoint](t, body); ep.Enabled || ep.DisabledReason != "maintenance" {
		t.Fatalf("disable: %s", body)
	}
	_, body = e.do(call{method: "POST", path: "/v1/endpoints/" + created.ID + "/enable"})
	if ep := decode[store.Endpoint](t, body); !ep.Enabled {
		t.Fatalf("enable: %s", body)
	}
	_, body = e.do(call{method: "POST", path: "/v1/endpoints/" + created.ID + "/rotate-secret"})
	if rotated := decode[api.EndpointWithSecret](t, body); rotated.Secret == created.Secret || !strings.HasPrefix(rotated.Secret, "whsec_") {
		t.Fatalf("rotate: %s", body)
	}
	if resp, _ = e.do(call{method: "DELETE", path: "/v1/endpoints/" + created.ID}); resp.StatusCode != 204 {
		t.Fatalf("delete: %d", resp.StatusCode)
	}
	resp, body = e.do(call{method: "GET", path: "/v1/endpoints/" + created.ID})
	e.problem(resp, body, 404, "")
	// An older event's id with no lookup key, and one that carries a job
	// that does not exist.
	for _, msgID := range []string{"evt_0123456789abcdef0123456789abcdef.job", tasks.EventID("6ba7b810-9dad-11d1-80b4-00c04fd430c8", "final") + ".job"} {
		resp, body = e.do(call{method: "POST", path: "/v1/messages/" + msgID + "/replay"})
		e.problem(resp, body, 404, "")
	}
}

func TestProbesAndDocs(t *testing.T) {
	t.Parallel()
	e := newAPIEnv(t)
	for _, path := range []string{"/healthz", "/readyz", "/v1/openapi.json", "/metrics"} {
		resp, _ := e.do(call{method: "GET", path: path, token: "-"})
		if resp.StatusCode != 200 {
			t.Errorf("%s: %d", path, resp.StatusCode)
		}
	}
	resp, body := e.do(call{method: "GET", path: "/v1/nothing-here", undocumented: true})
	if resp.StatusCode != 404 || !strings.Contains(resp.Header.Get("Content-Type"), "problem+json") {
		t.Errorf("unknown route: %d %s", resp.StatusCode, body)
	}
	e.server.SetDraining()
	if resp, _ := e.do(call{method: "GET", path: "/readyz", token: "-"}); resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/readyz while draining: %d", resp.StatusCode)
	}
	if resp, _ := e.do(call{method: "GET", path: "/healthz", token: "-"}); resp.StatusCode != 200 {
		t.Fatalf("/healthz while draining: %d", resp.StatusCode)
	}
}

func TestReadyzFailsWithoutRedis(t *testing.T) {
	t.Parallel()
	r := testutil.NewRedis(t)
	s := api.New(tasks.NewClient(r.Client, tasks.ClientOptions{Namespace: r.Namespace}), api.Options{Tokens: []string{token}, Redis: deadRedis(t)})
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/readyz with Redis down: %d", resp.StatusCode)
	}
}

// TestDashboardAuth: every dashboard path, its API included, answers 401
// without credentials; API tokens open it read-write, read-only tokens
// read-only.
func TestDashboardAuth(t *testing.T) {
	t.Parallel()
	e := newDashboardEnv(t)
	// Make the queue exist.
	if _, err := e.control.RequestPreview(context.Background(), tasks.PreviewRequest{SessionCode: "SESSION_DASH"}); err != nil {
		t.Fatal(err)
	}
	queue := tasks.QueuesFor(e.redis.Namespace).Previews
	get := func(path, user, pass, method string) int {
		req, _ := http.NewRequest(method, e.url+path, nil)
		if pass != "" {
			req.SetBasicAuth(user, pass)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	pause := "/monitoring/api/queues/" + queue + ":pause"
	for _, tc := range []struct {
		name, path, user, pass, method string
		want                           int
	}{
		{"page without credentials", "/monitoring/", "", "", "GET", 401},
		{"api without credentials", "/monitoring/api/queues", "", "", "GET", 401},
		{"wrong password", "/monitoring/api/queues", "admin", "guess", "GET", 401},
		{"page with an API token", "/monitoring/", "anyone", token, "GET", 200},
		{"api with an API token", "/monitoring/api/queues", "anyone", token, "GET", 200},
		{"read-only reads", "/monitoring/api/queues", "viewer", readOnlyToken, "GET", 200},
		{"read-only cannot pause", pause, "viewer", readOnlyToken, "POST", 405},
		{"read-write pauses", pause, "admin", token, "POST", 204},
	} {
		if got := get(tc.path, tc.user, tc.pass, tc.method); got != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, got, tc.want)
		}
	}
}

func TestFormatPayloadShowsTheJob(t *testing.T) {
	out := api.FormatPayload(tasks.TypePollPreview, []byte(`{"job_id":"3f0c0000-0000-4000-8000-000000000000","session_code":"S","seq":2}`))
	if !strings.HasPrefix(out, "job 3f0c0000-0000-4000-8000-000000000000  (GET /v1/previews/3f0c0000-0000-4000-8000-000000000000)\njob view: /ui/jobs/3f0c0000-0000-4000-8000-000000000000\n{") {
		t.Fatalf("formatted payload:\n%s", out)
	}
	if got := api.FormatPayload("x", []byte("not json")); got != "not json" {
		t.Fatalf("non-JSON payload: %q", got)
	}
}

// deadRedis is a client of a port nobody listens on.
func deadRedis(t *testing.T) redis.UniversalClient {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialerRetries: 1})
	t.Cleanup(func() { _ = c.Close() })
	return c
}
