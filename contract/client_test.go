package contract_test

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/previewd/previewd/api"
	"github.com/previewd/previewd/internal/testutil"
	"github.com/previewd/previewd/store"
	"github.com/previewd/previewd/tasks"
)

// TestTypedClientAgainstAPI runs src/client-check.ts, compiled against the
// generated types, against a real API over a real Redis namespace: the
// answers it reads through those types are the handlers' own.
func TestTypedClientAgainstAPI(t *testing.T) {
	t.Parallel()
	dir := compiled(t)
	r := testutil.NewRedis(t)
	control := tasks.NewClient(r.Client, tasks.ClientOptions{Namespace: r.Namespace})
	const token = "contract-token-5b1e"
	srv := httptest.NewServer(api.New(control, api.Options{Tokens: []string{token}, Redis: r.Client, Logger: zaptest.NewLogger(t)}).Handler())
	t.Cleanup(srv.Close)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := run(ctx, dir, "node", filepath.Join("out", "client-check.js"), srv.URL, token)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		JobID          string   `json:"job_id"`
		ReadStatus     string   `json:"read_status"`
		CanceledStatus string   `json:"canceled_status"`
		Messages       []string `json:"messages"`
		EndpointID     string   `json:"endpoint_id"`
		MissingStatus  int      `json:"missing_status"`
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("client-check printed %q: %v", out, err)
	}
	// What the client saw is what the store holds.
	job, err := control.Job(ctx, got.JobID)
	if err != nil {
		t.Fatalf("the job the client created: %v", err)
	}
	if job.Status != store.StatusCanceled || got.ReadStatus != string(store.StatusQueued) || got.CanceledStatus != string(store.StatusCanceled) {
		t.Errorf("client saw %+v; the store has status %s", got, job.Status)
	}
	if job.ExternalID != "ts-client" || job.IdempotencyKey != "ts-client-1" {
		t.Errorf("stored job %+v does not carry the client's request", job)
	}
	if _, err := control.Endpoint(ctx, got.EndpointID); err != nil {
		t.Errorf("the endpoint the client created: %v", err)
	}
	if got.MissingStatus != 404 {
		t.Errorf("missing job: status %d", got.MissingStatus)
	}
}
