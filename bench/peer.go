package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// The peer is the pipeline a competent team would write for the same
// product in an afternoon, on bare asynq, go-redis and net/http: a job
// hash per job (for status queries, kept as long as previewd keeps its
// jobs), a request task that reads the session for the spin URL, POSTs
// the preview unless the job already has a trial key, records it and
// schedules the first poll; a poll task that reads the session and either
// schedules the next poll or records the outcome and POSTs one signed
// (Standard Webhooks) final webhook. Errors are retried by asynq. It keeps
// none of previewd's guarantees beyond what that buys (a POST whose reply
// is lost is sent again; a receiver's outage retries the poll): it is the
// yardstick of what those guarantees cost, not a rival design.

const (
	peerTypeRequest = "peer:request"
	peerTypePoll    = "peer:poll"
	peerRetention   = 7 * 24 * time.Hour
)

// peerJob is both tasks' payload.
type peerJob struct {
	ID          string `json:"id"`
	SessionCode string `json:"session_code"`
	SpinIndex   int    `json:"spin_index"`
	WebhookURL  string `json:"webhook_url"`
}

// peerWorker holds the peer's handlers' dependencies.
type peerWorker struct {
	rdb      redis.UniversalClient
	tasks    *asynq.Client
	http     *http.Client
	csmURL   string
	apiKey   string
	ns       string
	interval time.Duration
	hook     *standardwebhooks.Webhook
}

func (p *peerWorker) jobKey(id string) string { return p.ns + ":job:" + id }

// enqueue is the peer's producer: the job record, then its request task.
func (p *peerWorker) enqueue(ctx context.Context, j peerJob) error {
	key := p.jobKey(j.ID)
	if _, err := p.rdb.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
		pipe.HSet(ctx, key, "status", "queued", "session_code", j.SessionCode, "webhook_url", j.WebhookURL,
			"created_at", time.Now().UTC().Format(time.RFC3339Nano))
		pipe.Expire(ctx, key, peerRetention)
		return nil
	}); err != nil {
		return fmt.Errorf("create job %s: %w", j.ID, err)
	}
	payload, err := json.Marshal(j)
	if err != nil {
		return err
	}
	_, err = p.tasks.EnqueueContext(ctx, asynq.NewTask(peerTypeRequest, payload),
		asynq.Queue(p.ns), asynq.TaskID("request-"+j.ID), asynq.MaxRetry(5))
	if err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
		return fmt.Errorf("enqueue request of job %s: %w", j.ID, err)
	}
	return nil
}

// ProcessTask dispatches on the task type.
func (p *peerWorker) ProcessTask(ctx context.Context, t *asynq.Task) error {
	var j peerJob
	if err := json.Unmarshal(t.Payload(), &j); err != nil {
		return fmt.Errorf("decode payload: %v: %w", err, asynq.SkipRetry)
	}
	switch t.Type() {
	case peerTypeRequest:
		return p.request(ctx, j)
	case peerTypePoll:
		return p.poll(ctx, j)
	}
	return fmt.Errorf("unknown task type %q: %w", t.Type(), asynq.SkipRetry)
}

func (p *peerWorker) request(ctx context.Context, j peerJob) error {
	key := p.jobKey(j.ID)
	trial, err := p.rdb.HGet(ctx, key, "trial_key").Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return err
	}
	if trial == "" {
		s, err := p.getSession(ctx, j.SessionCode)
		if err != nil {
			return err
		}
		if j.SpinIndex < 0 || j.SpinIndex >= len(s.Spins) {
			return fmt.Errorf("session %s has no spin %d: %w", j.SessionCode, j.SpinIndex, asynq.SkipRetry)
		}
		if trial, err = p.postPreview(ctx, j.SessionCode, j.SpinIndex, s.Spins[j.SpinIndex].ImageURL); err != nil {
			return err
		}
		if err := p.rdb.HSet(ctx, key, "trial_key", trial, "status", "generating").Err(); err != nil {
			return err
		}
	}
	return p.schedulePoll(ctx, j)
}

func (p *peerWorker) schedulePoll(ctx context.Context, j peerJob) error {
	payload, err := json.Marshal(j)
	if err != nil {
		return err
	}
	_, err = p.tasks.EnqueueContext(ctx, asynq.NewTask(peerTypePoll, payload),
		asynq.Queue(p.ns), asynq.ProcessIn(p.interval), asynq.MaxRetry(10))
	return err
}

func (p *peerWorker) poll(ctx context.Context, j peerJob) error {
	s, err := p.getSession(ctx, j.SessionCode)
	if err != nil {
		return err
	}
	var status string
	switch s.Status {
	case "preview_done", "training_refine", "refine_done":
		status = "done"
	case "preview_failed":
		status = "failed"
	default:
		return p.schedulePoll(ctx, j)
	}
	now := time.Now().UTC()
	if err := p.rdb.HSet(ctx, p.jobKey(j.ID), "status", status, "mesh_url", s.PreviewMeshURLGLB,
		"finished_at", now.Format(time.RFC3339Nano)).Err(); err != nil {
		return err
	}
	return p.sendWebhook(ctx, j, status, s, now)
}

// peerSession is the part of a session the peer reads.
type peerSession struct {
	Status string `json:"status"`
	Spins  []struct {
		ImageURL string `json:"image_url"`
	} `json:"spins"`
	PreviewMeshURLGLB string `json:"preview_mesh_url_glb"`
}

func (p *peerWorker) getSession(ctx context.Context, code string) (peerSession, error) {
	var env struct {
		Data peerSession `json:"data"`
	}
	if err := p.csm(ctx, http.MethodGet, "/image-to-3d-sessions/"+code, nil, &env); err != nil {
		return peerSession{}, err
	}
	return env.Data, nil
}

func (p *peerWorker) postPreview(ctx context.Context, code string, index int, spin string) (string, error) {
	body, err := json.Marshal(map[string]any{"selected_spin_index": index, "selected_spin": spin})
	if err != nil {
		return "", err
	}
	var env struct {
		Data struct {
			UniqueTrialKey string `json:"unique_trial_key"`
		} `json:"data"`
	}
	if err := p.csm(ctx, http.MethodPost, "/image-to-3d-sessions/get-3d/preview/"+code, body, &env); err != nil {
		return "", err
	}
	if env.Data.UniqueTrialKey == "" {
		return "", errors.New("preview reply without unique_trial_key")
	}
	return env.Data.UniqueTrialKey, nil
}

// csm makes one call and decodes its 2xx JSON reply into out.
func (p *peerWorker) csm(ctx context.Context, method, path string, body []byte, out any) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, p.csmURL+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("x-api-key", p.apiKey)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := p.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s", method, path, resp.Status)
	}
	return json.Unmarshal(raw, out)
}

// sendWebhook POSTs the final event, shaped like previewd's, signed.
func (p *peerWorker) sendWebhook(ctx context.Context, j peerJob, status string, s peerSession, at time.Time) error {
	body, err := json.Marshal(map[string]any{
		"type":      "preview." + status,
		"timestamp": at,
		"data": map[string]any{
			"id": j.ID, "status": status, "session_code": j.SessionCode,
			"mesh_urls": map[string]string{"glb": s.PreviewMeshURLGLB},
		},
	})
	if err != nil {
		return err
	}
	msgID := "msg_" + j.ID
	sig, err := p.hook.Sign(msgID, at, body)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, j.WebhookURL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("webhook-id", msgID)
	req.Header.Set("webhook-timestamp", strconv.FormatInt(at.Unix(), 10))
	req.Header.Set("webhook-signature", sig)
	resp, err := p.http.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("webhook %s: %s", j.WebhookURL, resp.Status)
	}
	return nil
}

// peer runs the peer pipeline over the phase's jobs.
func (r *rig) peer(ctx context.Context) (Phase, error) {
	ns := r.namespace("peer")
	defer r.cleanup(ns)
	hook, err := standardwebhooks.NewWebhook(r.secret)
	if err != nil {
		return Phase{}, fmt.Errorf("webhook secret: %w", err)
	}
	pw := &peerWorker{
		rdb: r.rdb, tasks: asynq.NewClientFromRedisClient(r.rdb), http: &http.Client{Timeout: 30 * time.Second},
		csmURL: r.simURL, apiKey: r.apiKey, ns: ns, interval: r.opts.PollInterval, hook: hook,
	}
	srv := asynq.NewServerFromRedisClient(r.rdb, asynq.Config{
		Concurrency:              2 * r.opts.Concurrency,
		Queues:                   map[string]int{ns: 1},
		LogLevel:                 asynq.ErrorLevel,
		TaskCheckInterval:        r.opts.checkInterval(),
		DelayedTaskCheckInterval: r.opts.checkInterval(),
	})
	before := serverCount(ctx, r.rdb)
	if err := srv.Start(pw); err != nil {
		return Phase{}, fmt.Errorf("start asynq server: %w", err)
	}
	defer srv.Shutdown()
	if err := awaitServers(ctx, r.rdb, before, 1); err != nil {
		return Phase{}, err
	}

	n := r.opts.Jobs
	codes, ids := make([]string, n), make([]string, n)
	for i := range n {
		codes[i] = fmt.Sprintf("BENCH_%s_PEER_%05d", r.run[:8], i)
		ids[i] = fmt.Sprintf("peer-%s-%05d", r.run[:8], i)
		r.sim.AddSession(codes[i], session)
	}
	m, err := r.startMeter(ctx)
	if err != nil {
		return Phase{}, err
	}
	err = enqueueAll(ctx, n, func(ctx context.Context, i int) error {
		return pw.enqueue(ctx, peerJob{ID: ids[i], SessionCode: codes[i], SpinIndex: i % 4, WebhookURL: r.hooksURL})
	})
	if err != nil {
		return Phase{}, err
	}
	last, err := r.awaitFinals(ctx, ids)
	if err != nil {
		return Phase{}, err
	}
	w, err := m.stop(ctx)
	if err != nil {
		return Phase{}, err
	}
	w.elapsed = last.Sub(m.start) // to the last final webhook, not to when the bench noticed it
	if err := r.awaitDrained(ctx, ns); err != nil {
		return Phase{}, err
	}
	srv.Shutdown()
	p := Phase{Name: "peer", Jobs: n, Finished: r.finals(ids)}
	p.finish(w)
	r.upstream(&p, codes, ids)
	use, err := namespaceMemory(ctx, r.rdb, ns+":*", "asynq:{"+ns+"}:*")
	if err != nil {
		return Phase{}, err
	}
	p.setMemory(use)
	return p, nil
}
