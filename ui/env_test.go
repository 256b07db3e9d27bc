package ui_test

import (
	"context"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/previewd/previewd/api"
	"github.com/previewd/previewd/csm"
	"github.com/previewd/previewd/csmsim"
	"github.com/previewd/previewd/internal/testutil"
	"github.com/previewd/previewd/store"
	"github.com/previewd/previewd/tasks"
	"github.com/previewd/previewd/ui"
	"github.com/previewd/previewd/webhook"
)

const (
	fullToken     = "ui-test-full-token-7d1e"
	readOnlyToken = "ui-test-read-only-token-41c2"
)

// uiEnv is the API server with the job view mounted, on a Redis namespace
// of its own, with jobs in several states whose mesh URLs are the CSM
// simulator's own (which serves a real GLB there).
type uiEnv struct {
	t      *testing.T
	url    string
	redis  *testutil.Redis
	client *tasks.Client
	sim    *csmsim.Server
	// The fixture jobs.
	done, stuck, recent, failed store.Job
	meshes                      map[string]string // the done job's, as the simulator reported them
}

type envOptions struct {
	// policy: the mesh fetcher applies the address policy (the simulator
	// on loopback is then refused).
	policy       bool
	meshMaxBytes int64
}

func newUIEnv(t *testing.T, o envOptions) *uiEnv {
	t.Helper()
	r := testutil.NewRedis(t)
	e := &uiEnv{t: t, redis: r}
	e.startSim()
	now := time.Now()
	at := func(ago time.Duration) *tasks.Client {
		// A producer whose clock says the job was created ago: the store
		// stamps records with it, so ages are real ages.
		created := now.Add(-ago)
		return tasks.NewClient(r.Client, tasks.ClientOptions{Namespace: r.Namespace, AllowPrivateWebhooks: true, Now: func() time.Time { return created }})
	}
	e.client = tasks.NewClient(r.Client, tasks.ClientOptions{Namespace: r.Namespace, AllowPrivateWebhooks: true})
	e.done = e.makeDone(at(45*time.Minute), "SESSION_UI_DONE")
	e.stuck = e.makeGenerating(at(40*time.Minute), "SESSION_UI_STUCK")
	e.failed = e.makeFailed(at(20*time.Minute), "SESSION_UI_FAILED")
	e.recent = e.submit(at(90*time.Second), "SESSION_UI_RECENT", "order-recent")

	sender := webhook.NewSender(webhook.SenderOptions{Timeout: 5 * time.Second, AllowPrivate: !o.policy})
	view := ui.New(ui.Options{
		Jobs: e.client, Counts: e.client.Store(), Mesh: sender, Namespace: r.Namespace,
		Root: api.UIPath, DashboardPath: api.DashboardPath, MeshMaxBytes: o.meshMaxBytes,
		Logger: zaptest.NewLogger(t),
	})
	s := api.New(e.client, api.Options{
		Tokens: []string{fullToken}, ReadOnlyTokens: []string{readOnlyToken}, Redis: r.Client,
		UI: view, Logger: zaptest.NewLogger(t),
	})
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	e.url = srv.URL
	return e
}

// startSim serves the simulator with its asset URLs pointing at itself.
func (e *uiEnv) startSim() {
	srv := httptest.NewUnstartedServer(nil)
	base := "http://" + srv.Listener.Addr().String()
	e.sim = csmsim.New(csmsim.Options{APIKey: testutil.SimAPIKey, BaseAssetURL: base})
	srv.Config.Handler = e.sim
	srv.Start()
	e.t.Cleanup(func() { e.sim.Close(); srv.Close() })
	e.sim.AddSession("SESSION_UI_DONE", csmsim.SessionConfig{Schema: csmsim.Schema2025, GenerationTime: 50 * time.Millisecond})
	e.meshes = e.simMeshes(base, "SESSION_UI_DONE")
}

// simMeshes asks the simulator for a preview, as a worker would, and
// returns the mesh URLs the finished session reports.
func (e *uiEnv) simMeshes(base, code string) map[string]string {
	t := e.t
	c, err := csm.New(csm.Options{BaseURL: base, APIKey: testutil.SimAPIKey, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	s, err := c.GetSession(ctx, code)
	if err != nil || len(s.Spins) < 2 {
		t.Fatalf("session %s: %v", code, err)
	}
	if _, err := c.RequestPreview(ctx, code, csm.PreviewParams{SelectedSpinIndex: 1, SelectedSpin: s.Spins[1].ImageURL}); err != nil {
		t.Fatal(err)
	}
	var meshes map[string]string
	testutil.Eventually(t, 20*time.Second, "the simulated preview finishes", func() bool {
		s, err := c.GetSession(ctx, code)
		if err != nil {
			t.Fatal(err)
		}
		meshes = s.Preview.Map()
		return meshes["glb"] != ""
	})
	return meshes
}

func (e *uiEnv) submit(c *tasks.Client, code, external string) store.Job {
	e.t.Helper()
	j, err := c.RequestPreview(context.Background(), tasks.PreviewRequest{
		SessionCode: code, ExternalID: external, WebhookURL: "https://hooks.example.com/previews?token=secret-receiver-token",
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return j
}

// advance changes a job through the store's one door, with the history
// stamped at offsets from its creation.
func (e *uiEnv) advance(id string, fn func(j *store.Job, t0 time.Time)) store.Job {
	e.t.Helper()
	j, err := e.client.Store().Update(context.Background(), id, func(j *store.Job, _ time.Time) (store.Change, error) {
		fn(j, j.CreatedAt)
		return store.Change{}, nil
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return j
}

func (e *uiEnv) makeGenerating(c *tasks.Client, code string) store.Job {
	j := e.submit(c, code, "order-stuck")
	return e.advance(j.ID, func(j *store.Job, t0 time.Time) {
		j.SetStatus(store.StatusRequesting, t0.Add(1200*time.Millisecond), "")
		j.SetStatus(store.StatusGenerating, t0.Add(2500*time.Millisecond), "preview accepted")
		j.SetUpstreamStatus("in_progress", t0.Add(9*time.Second))
		pct := 50
		j.PercentDone = &pct
		j.Poll.Seq = 7
	})
}

func (e *uiEnv) makeDone(c *tasks.Client, code string) store.Job {
	j := e.submit(c, code, "order-done")
	j = e.advance(j.ID, func(j *store.Job, t0 time.Time) {
		j.SetStatus(store.StatusRequesting, t0.Add(800*time.Millisecond), "")
		j.SetStatus(store.StatusGenerating, t0.Add(2*time.Second), "preview accepted")
		j.SetUpstreamStatus("in_progress", t0.Add(7*time.Second))
		j.SetUpstreamStatus("preview_done", t0.Add(48*time.Second))
		pct := 100
		j.PercentDone = &pct
		j.MeshURLs = e.meshes
		j.Finish(store.StatusDone, t0.Add(49*time.Second), nil, "")
	})
	// Its final webhook: refused twice, then delivered.
	ctx := context.Background()
	ev := tasks.EventID(j.ID, "final")
	m := store.Message{
		ID: store.MessageID(ev, "job"), EventID: ev, EventType: store.EventDone, Destination: "job",
		Status: store.MessagePending, CreatedAt: j.CreatedAt.Add(49 * time.Second),
	}
	if err := e.client.Store().CreateMessage(ctx, j.ID, m); err != nil {
		e.t.Fatal(err)
	}
	m.AddAttempt(store.Attempt{At: m.CreatedAt.Add(100 * time.Millisecond), StatusCode: 503, Latency: 42 * time.Millisecond, Response: "upstream unavailable"})
	m.AddAttempt(store.Attempt{At: m.CreatedAt.Add(5 * time.Second), Error: "the receiver did not answer in time", Latency: 15 * time.Second})
	m.AddAttempt(store.Attempt{At: m.CreatedAt.Add(35 * time.Second), StatusCode: 204, Latency: 18 * time.Millisecond})
	delivered := m.CreatedAt.Add(35 * time.Second)
	m.Status, m.DeliveredAt = store.MessageDelivered, &delivered
	if err := e.client.Store().SaveMessage(ctx, j.ID, m); err != nil {
		e.t.Fatal(err)
	}
	return j
}

func (e *uiEnv) makeFailed(c *tasks.Client, code string) store.Job {
	j := e.submit(c, code, "order-failed")
	return e.advance(j.ID, func(j *store.Job, t0 time.Time) {
		j.SetStatus(store.StatusRequesting, t0.Add(time.Second), "")
		j.Finish(store.StatusFailed, t0.Add(3*time.Second), &store.JobError{Code: store.CodeSessionNotFound, Message: "session not found upstream"}, "")
	})
}

// get fetches a path with the given token as Basic password ("" sends none).
func (e *uiEnv) do(method, path, token string, header map[string]string) *http.Response {
	e.t.Helper()
	req, err := http.NewRequest(method, e.url+path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", basic(token))
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func basic(token string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte("operator:"+token))
}
