// Package chaos is the `previewd chaos` program: it proves previewd's
// guarantees (one billed preview per job, every job final with its final
// webhook) under the faults production meets, with real processes.
//
// A run starts its own redis-server (append-only, fsync always), the CSM
// simulator and a webhook receiver in-process on loopback ports, Toxiproxy
// in-process on the Redis, CSM and receiver links, and several `previewd
// worker` processes of the same binary. It enqueues jobs (each with its own
// session), plays a seeded schedule of faults (SIGKILL and SIGTERM of
// workers, kill -9 of Redis, lost replies on the Redis and CSM links,
// latency, a receiver outage), and judges the run only from what the
// simulator and the receiver saw, never from previewd's store.
package chaos

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/redis/go-redis/v9"

	"github.com/previewd/previewd/csmsim"
	"github.com/previewd/previewd/internal/receiver"
	"github.com/previewd/previewd/tasks"
)

// Options configure a run.
type Options struct {
	// Jobs to run; default 150 with Short, else 1,000.
	Jobs int
	// Seed of the fault schedule and the sessions; 0 draws one (it is logged,
	// so any run can be replayed).
	Seed uint64
	// Short paces a run for CI: under 3 minutes of wall time.
	Short bool
	// Workers is the number of worker processes; default 3.
	Workers int
	// Executable is the previewd binary the workers run (required).
	Executable string
	// RedisServer is the redis-server binary; default from PATH.
	RedisServer string
	// Dir receives the logs and Redis's data; default a new temporary
	// directory, removed after a run without problems.
	Dir string
	// Out receives the schedule, progress, problems and the summary line.
	Out io.Writer
}

// pacing is the timeline of a run.
type pacing struct {
	enqueue     time.Duration // jobs are enqueued evenly over it
	faultStart  time.Duration
	faultWindow time.Duration
	limit       time.Duration // the run stops by then, finished or not
	jobDeadline time.Duration
}

// Worker settings of a run: short and realistic, so that retries, polls and
// deadlines all happen within its minutes.
const (
	pollInterval   = time.Second
	csmTimeout     = 5 * time.Second
	reconcileGrace = 30 * time.Second
	// hold is how recently a worker must have contacted CSM for a job to
	// count it as held by that worker when it is killed (see Recovery).
	hold = 3 * time.Second
)

func (o Options) pacing() pacing {
	if o.Short {
		enq := time.Duration(float64(o.Jobs) / 2.5 * float64(time.Second))
		return pacing{enqueue: enq, faultStart: 5 * time.Second, faultWindow: enq + 15*time.Second,
			limit: enq + 100*time.Second, jobDeadline: 2 * time.Minute}
	}
	enq := time.Duration(float64(o.Jobs) / 4 * float64(time.Second))
	return pacing{enqueue: enq, faultStart: 5 * time.Second, faultWindow: enq + 20*time.Second,
		limit: enq + 270*time.Second, jobDeadline: 4 * time.Minute}
}

func (o *Options) defaults() error {
	if o.Jobs == 0 {
		o.Jobs = 1000
		if o.Short {
			o.Jobs = 150
		}
	}
	if o.Jobs < 1 || o.Jobs > 100000 {
		return fmt.Errorf("jobs must be between 1 and 100000, got %d", o.Jobs)
	}
	if o.Workers == 0 {
		o.Workers = 3
	}
	if o.Workers < 1 {
		return fmt.Errorf("workers must be at least 1, got %d", o.Workers)
	}
	if o.Executable == "" {
		return errors.New("the previewd executable is required")
	}
	if o.Seed == 0 {
		o.Seed = uint64(time.Now().UnixNano()) % 1_000_000
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	return nil
}

// job is one enqueued job.
type job struct {
	id, session string
	at          time.Time // enqueued
}

// run is the state of one chaos run.
type run struct {
	opts   Options
	pace   pacing
	dir    string
	keep   bool // keep dir: the run found problems or failed
	start  time.Time
	stopFn []func() // clean-up, run in reverse

	redis    *redisServer
	links    *links
	redisLn  *toxiproxy.Proxy
	csmLns   []*toxiproxy.Proxy
	rcvLn    *toxiproxy.Proxy
	sim      *csmsim.Server
	front    *simFront
	rcv      *receiver.Receiver
	workers  []*child
	producer *tasks.Client

	outMu sync.Mutex

	mu         sync.Mutex
	jobs       []job
	kills      []kill
	redisKills []kill
	redisDown  bool
	restarts   int
	enqueueErr error
	tracks     map[string]Track // by job id, once judged
}

// kill is one executed kill; slot -1 is Redis.
type kill struct {
	slot int
	at   time.Time
}

// Run runs a chaos run and returns its verdict; the error is for a run that
// could not be carried out (set-up failed, interrupted), not for a verdict
// with problems. Every child process is killed before Run returns.
func Run(ctx context.Context, opts Options) (v Verdict, err error) {
	if err := opts.defaults(); err != nil {
		return Verdict{}, err
	}
	r := &run{opts: opts, pace: opts.pacing()}
	defer func() {
		if p := recover(); p != nil {
			r.keep = true
			r.cleanup()
			panic(p)
		}
		if err != nil || v.Failed() {
			r.keep = true
		}
		r.cleanup()
	}()
	if err := r.setup(ctx); err != nil {
		return Verdict{}, err
	}
	if err := r.execute(ctx); err != nil {
		return Verdict{}, err
	}
	v = r.judge()
	r.report(v)
	return v, nil
}

func (r *run) logf(format string, args ...any) {
	r.outMu.Lock()
	defer r.outMu.Unlock()
	fmt.Fprintf(r.opts.Out, "chaos: "+format+"\n", args...)
}

func (r *run) since() time.Duration { return time.Since(r.start) }

func (r *run) onStop(fn func()) { r.stopFn = append(r.stopFn, fn) }

func (r *run) cleanup() {
	for i := len(r.stopFn) - 1; i >= 0; i-- {
		r.stopFn[i]()
	}
	r.stopFn = nil
	if r.dir == "" {
		return
	}
	if r.keep {
		r.logf("logs and Redis data kept in %s", r.dir)
		return
	}
	if r.opts.Dir == "" {
		_ = os.RemoveAll(r.dir)
	}
}

// serve serves h on a free loopback port until the run ends.
func (r *run) serve(h http.Handler) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("listen: %w", err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	r.onStop(func() { _ = srv.Close() })
	return ln.Addr().String(), nil
}

func (r *run) setup(ctx context.Context) error {
	r.dir = r.opts.Dir
	if r.dir == "" {
		d, err := os.MkdirTemp("", fmt.Sprintf("previewd-chaos-%d-", r.opts.Seed))
		if err != nil {
			return fmt.Errorf("run directory: %w", err)
		}
		r.dir = d
	} else if err := os.MkdirAll(r.dir, 0o700); err != nil {
		return fmt.Errorf("run directory: %w", err)
	}
	r.logf("seed %d, %d jobs, %d workers, run directory %s", r.opts.Seed, r.opts.Jobs, r.opts.Workers, r.dir)

	var err error
	if r.redis, err = startRedis(ctx, r.opts.RedisServer, r.dir); err != nil {
		return err
	}
	r.onStop(r.redis.close)

	apiKey := "chaos-" + randomHex()
	r.sim = csmsim.New(csmsim.Options{APIKey: apiKey})
	r.onStop(r.sim.Close) // runs before the servers close: hanging handlers end
	r.front = newSimFront(r.sim)
	rcv, secretText, err := receiver.New()
	if err != nil {
		return err
	}
	r.rcv = rcv
	rcvAddr, err := r.serve(r.rcv)
	if err != nil {
		return err
	}

	r.links = newLinks()
	r.onStop(r.links.close)
	if r.redisLn, err = r.links.add("redis", r.redis.addr); err != nil {
		return err
	}
	if r.rcvLn, err = r.links.add("receiver", rcvAddr); err != nil {
		return err
	}
	for i := range r.opts.Workers {
		addr, err := r.serve(r.front.handler(i))
		if err != nil {
			return err
		}
		p, err := r.links.add(fmt.Sprintf("csm-%d", i), addr)
		if err != nil {
			return err
		}
		r.csmLns = append(r.csmLns, p)
	}

	// The harness enqueues over its own, direct connection: the faults of
	// the Redis link are previewd's to survive, not the producer's.
	rdb := redis.NewClient(&redis.Options{Addr: r.redis.addr})
	r.onStop(func() { _ = rdb.Close() })
	r.producer = tasks.NewClient(rdb, tasks.ClientOptions{
		Namespace: namespace, JobDeadline: r.pace.jobDeadline, AllowPrivateWebhooks: true,
	})

	base := os.Environ()
	for i := range r.opts.Workers {
		env := workerEnv(base, map[string]string{
			"REDIS_URL":              "redis://" + r.redisLn.Listen + "/0",
			"NAMESPACE":              namespace,
			"CSM_BASE_URL":           "http://" + r.csmLns[i].Listen,
			"CSM_API_KEY":            apiKey,
			"CSM_TIMEOUT":            csmTimeout.String(),
			"CSM_RATE_LIMIT":         "50",
			"CSM_RATE_BURST":         "50",
			"WEBHOOK_SECRET":         secretText,
			"WEBHOOK_ALLOW_PRIVATE":  "true",
			"WEBHOOK_TIMEOUT":        "5s",
			"WEBHOOK_RETRY_SCHEDULE": "1s,2s,4s,8s,10s,10s,10s,10s,10s,10s",
			"POLL_INTERVAL":          pollInterval.String(),
			"POLL_MAX_INTERVAL":      "2s",
			"JOB_DEADLINE":           r.pace.jobDeadline.String(),
			"RECONCILE_GRACE":        reconcileGrace.String(),
			"SHUTDOWN_TIMEOUT":       "5s",
			"LOG_FORMAT":             "json",
			"LOG_LEVEL":              "info",
		})
		c, err := newChild(fmt.Sprintf("worker-%d", i), r.opts.Executable,
			filepath.Join(r.dir, fmt.Sprintf("worker-%d.log", i)), env, "worker")
		if err != nil {
			return err
		}
		r.onStop(c.close)
		if err := c.start(); err != nil {
			return err
		}
		r.workers = append(r.workers, c)
	}
	return nil
}

const namespace = "chaos"

// workerEnv is the harness's environment without its own PREVIEWD_*
// settings, plus the workers' (keys without the PREVIEWD_ prefix).
func workerEnv(base []string, set map[string]string) []string {
	out := make([]string, 0, len(base)+len(set))
	for _, kv := range base {
		if !strings.HasPrefix(kv, "PREVIEWD_") {
			out = append(out, kv)
		}
	}
	for k, v := range set {
		out = append(out, "PREVIEWD_"+k+"="+v)
	}
	return out
}

func randomHex() string {
	return fmt.Sprintf("%016x", rand.Uint64())
}

// execute enqueues the jobs, plays the schedule and waits until every job
// has its final webhook (or the time limit).
func (r *run) execute(ctx context.Context) error {
	plan := PlanFor(r.opts.Workers, r.pace.faultStart, r.pace.faultWindow)
	events := Schedule(r.opts.Seed, plan)
	r.logf("schedule of seed %d: %d faults", r.opts.Seed, len(events))
	for _, e := range events {
		r.logf("  %s", e)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r.start = time.Now()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.enqueue(ctx)
	}()
	for _, e := range events {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if sleepCtx(ctx, time.Until(r.start.Add(e.At))) {
				r.inject(ctx, e)
			}
		}()
	}
	err := r.wait(ctx, plan.End)
	cancel()
	wg.Wait()
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.enqueueErr
}

// sleepCtx sleeps d; false when ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// sessionFor returns job i's session: both schemas, a few seconds of
// generation, and upstream faults, replies lost after CSM accepted the
// preview among them. Every session can succeed.
func sessionFor(rng *rand.Rand) csmsim.SessionConfig {
	cfg := csmsim.SessionConfig{
		Schema:         csmsim.Schema(rng.IntN(2)),
		GenerationTime: time.Duration(2000+rng.IntN(3000)) * time.Millisecond,
		QueueTime:      time.Duration(rng.IntN(1000)) * time.Millisecond,
	}
	switch n := rng.IntN(100); {
	case n < 6:
		cfg.Faults = []csmsim.Fault{{Endpoint: csmsim.EndpointPreview, Kind: csmsim.FaultAcceptThenReset}}
	case n < 10:
		cfg.Faults = []csmsim.Fault{{Endpoint: csmsim.EndpointPreview, Kind: csmsim.FaultAcceptThen502}}
	case n < 12:
		cfg.Faults = []csmsim.Fault{{Endpoint: csmsim.EndpointPreview, Kind: csmsim.FaultAcceptThenHang}}
	case n < 17:
		cfg.Faults = []csmsim.Fault{{Endpoint: csmsim.EndpointPreview, Kind: csmsim.Fault429, RetryAfter: time.Second}}
	case n < 22:
		cfg.Faults = []csmsim.Fault{{Endpoint: csmsim.EndpointGetSession, Kind: csmsim.Fault503, Times: 2}}
	case n < 25 && cfg.Schema == csmsim.SchemaLegacy:
		cfg.AutoRefine = true
	}
	return cfg
}

// enqueue enqueues the jobs evenly over the enqueue window, each with its
// own session and idempotency key, retrying through Redis restarts.
func (r *run) enqueue(ctx context.Context) {
	rng := rand.New(rand.NewPCG(r.opts.Seed, 2))
	webhookURL := "http://" + r.rcvLn.Listen + "/hooks"
	gap := r.pace.enqueue / time.Duration(r.opts.Jobs)
	for i := range r.opts.Jobs {
		if !sleepCtx(ctx, time.Until(r.start.Add(time.Duration(i)*gap))) {
			return
		}
		code := fmt.Sprintf("SESSION_CHAOS_%d_%05d", r.opts.Seed, i)
		r.sim.AddSession(code, sessionFor(rng))
		req := tasks.PreviewRequest{
			SessionCode:       code,
			SelectedSpinIndex: i % 4,
			WebhookURL:        webhookURL,
			ExternalID:        fmt.Sprintf("chaos-%d", i),
			IdempotencyKey:    code,
		}
		id, err := r.request(ctx, req)
		if err != nil {
			r.mu.Lock()
			r.enqueueErr = fmt.Errorf("enqueue job %d: %w", i, err)
			r.mu.Unlock()
			return
		}
		r.mu.Lock()
		r.jobs = append(r.jobs, job{id: id, session: code, at: time.Now()})
		r.mu.Unlock()
	}
}

// request enqueues one job, retrying for up to 30 s: a Redis restart
// refuses it for a few seconds, and the idempotency key makes a retry whose
// first attempt did get through return the same job.
func (r *run) request(ctx context.Context, req tasks.PreviewRequest) (string, error) {
	for try := 0; ; try++ {
		j, err := r.producer.RequestPreview(ctx, req)
		if err == nil {
			return j.ID, nil
		}
		if try >= 100 || !sleepCtx(ctx, 300*time.Millisecond) {
			return "", err
		}
	}
}

// inject applies one scheduled fault and, for a window, takes it back.
func (r *run) inject(ctx context.Context, e Event) {
	name := fmt.Sprintf("chaos_%d_%s", e.At.Milliseconds(), e.Kind)
	switch e.Kind {
	case KillWorker, TermWorker:
		r.killWorker(ctx, e)
	case KillRedis:
		r.killRedis(ctx, e)
	case RedisResetPeer, CSMResetPeer, RedisLatency, CSMLatency:
		ps := r.csmLns
		if e.Kind == RedisResetPeer || e.Kind == RedisLatency {
			ps = []*toxiproxy.Proxy{r.redisLn}
		}
		t := toxic{Name: name, Type: "reset_peer", Stream: "downstream", Toxicity: e.Toxicity,
			Attributes: map[string]any{"timeout": 0}}
		if e.Kind == RedisLatency || e.Kind == CSMLatency {
			t = toxic{Name: name, Type: "latency", Stream: "downstream", Toxicity: 1,
				Attributes: map[string]any{"latency": e.Latency.Milliseconds(), "jitter": e.Latency.Milliseconds() / 4}}
		}
		if err := addToxic(ps, t); err != nil {
			r.logf("+%5.1fs %s: %v", r.since().Seconds(), e.Kind, err)
			return
		}
		r.logf("+%5.1fs %s: on", r.since().Seconds(), e.describe())
		sleepCtx(ctx, e.Duration)
		removeToxic(ps, name)
		r.logf("+%5.1fs %s: off", r.since().Seconds(), e.Kind)
	case ReceiverOutage:
		r.rcvLn.Stop()
		r.logf("+%5.1fs receiver down for %s", r.since().Seconds(), e.Duration)
		sleepCtx(ctx, e.Duration)
		if err := r.rcvLn.Start(); err != nil {
			r.logf("+%5.1fs receiver link does not restart: %v", r.since().Seconds(), err)
			return
		}
		r.logf("+%5.1fs receiver up", r.since().Seconds())
	}
}

func (r *run) killWorker(ctx context.Context, e Event) {
	w := r.workers[e.Worker]
	sig := syscall.SIGKILL
	if e.Kind == TermWorker {
		sig = syscall.SIGTERM
	}
	at := time.Now()
	pid, ok := w.signal(sig)
	if !ok {
		r.logf("+%5.1fs %s skipped: worker-%d is not running", r.since().Seconds(), e.Kind, e.Worker)
		return
	}
	r.mu.Lock()
	r.kills = append(r.kills, kill{slot: e.Worker, at: at})
	r.mu.Unlock()
	r.logf("+%5.1fs %s worker-%d (pid %d)", r.since().Seconds(), sig, e.Worker, pid)
	if !w.wait(15 * time.Second) {
		r.logf("+%5.1fs worker-%d still running 15s after %s; SIGKILL", r.since().Seconds(), e.Worker, sig)
		w.kill()
	}
	if !sleepCtx(ctx, e.Duration) {
		return
	}
	if err := w.start(); err != nil {
		r.logf("+%5.1fs restart worker-%d: %v", r.since().Seconds(), e.Worker, err)
		return
	}
	r.logf("+%5.1fs worker-%d restarted", r.since().Seconds(), e.Worker)
}

func (r *run) killRedis(ctx context.Context, e Event) {
	r.mu.Lock()
	if r.redisDown {
		r.mu.Unlock()
		r.logf("+%5.1fs kill -9 redis skipped: already down", r.since().Seconds())
		return
	}
	r.redisDown = true
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.redisDown = false
		r.mu.Unlock()
	}()
	killedAt := time.Now()
	pid, ok := r.redis.signal(syscall.SIGKILL)
	if !ok {
		r.logf("+%5.1fs kill -9 redis skipped: not running", r.since().Seconds())
		return
	}
	r.redis.wait(5 * time.Second)
	r.logf("+%5.1fs kill -9 redis-server (pid %d), down for %s", r.since().Seconds(), pid, e.Duration)
	sleepCtx(ctx, e.Duration)
	// Restart even when the run is ending: the clean-up expects a process.
	if err := r.redis.restart(context.WithoutCancel(ctx)); err != nil {
		r.logf("+%5.1fs redis-server does not restart: %v", r.since().Seconds(), err)
		return
	}
	r.mu.Lock()
	r.restarts++
	r.redisKills = append(r.redisKills, kill{slot: -1, at: killedAt})
	r.mu.Unlock()
	r.logf("+%5.1fs redis-server restarted on %s with its data", r.since().Seconds(), r.redis.addr)
}

// wait shows progress and returns once every job is enqueued and announced
// final, the faults are over (faultsEnd) and a short grace has passed for
// late duplicates; or at the time limit. It restarts a worker that exited
// without being told to.
func (r *run) wait(ctx context.Context, faultsEnd time.Duration) error {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var doneAt time.Time
	lastShown := time.Duration(0)
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("interrupted: %w", ctx.Err())
		case <-tick.C:
		}
		r.mu.Lock()
		jobs := append([]job(nil), r.jobs...)
		enqErr := r.enqueueErr
		r.mu.Unlock()
		if enqErr != nil {
			return enqErr
		}
		final := 0
		for _, j := range jobs {
			if _, ok := r.rcv.Final(j.id); ok {
				final++
			}
		}
		for i, w := range r.workers {
			if alive, surprise, state := w.running(); !alive && surprise {
				r.logf("+%5.1fs worker-%d exited by itself (%s); restarting it", r.since().Seconds(), i, state)
				if err := w.start(); err != nil {
					return err
				}
			}
		}
		if s := r.since(); s-lastShown >= 5*time.Second {
			lastShown = s
			delivered, rejected := r.rcv.Totals()
			r.logf("+%5.1fs enqueued %d/%d, final webhooks %d, webhooks %d (%d bad signatures), CSM requests %d, accepted previews %d",
				s.Seconds(), len(jobs), r.opts.Jobs, final, delivered, rejected, r.front.total(), r.sim.TotalAcceptedPreviews())
		}
		switch {
		case len(jobs) == r.opts.Jobs && final == len(jobs) && r.since() > faultsEnd+4*time.Second:
			if doneAt.IsZero() {
				doneAt = time.Now()
			}
			if time.Since(doneAt) >= 3*time.Second {
				return nil
			}
		case r.since() >= r.pace.limit:
			r.logf("+%5.1fs time limit: %d of %d jobs have their final webhook", r.since().Seconds(), final, len(jobs))
			return nil
		}
	}
}

// judge gathers the observations of the simulator and the receiver.
func (r *run) judge() Verdict {
	r.mu.Lock()
	jobs := append([]job(nil), r.jobs...)
	kills := append([]kill(nil), r.kills...)
	redisKills := append([]kill(nil), r.redisKills...)
	obs := Observations{BodiesByID: r.rcv.BodiesByID(), Kills: len(r.kills), RedisRestarts: r.restarts}
	r.mu.Unlock()
	end := time.Now()
	r.tracks = make(map[string]Track, len(jobs))
	tracks := make([]Track, 0, len(jobs))
	for _, j := range jobs {
		rec := JobRecord{ID: j.id, Session: j.session, Accepted: r.sim.AcceptedPreviews(j.session), MeshServed: r.front.meshServed(j.session)}
		t := Track{JobID: j.id, Contacts: r.front.track(j.session)}
		for _, c := range t.Contacts {
			if c.Post {
				rec.PostsSeen++
			}
		}
		if f, ok := r.rcv.Final(j.id); ok {
			rec.Final, rec.FinalError, t.FinalAt = string(f.Type), f.ErrorCode, f.At
		}
		obs.Jobs = append(obs.Jobs, rec)
		tracks = append(tracks, t)
		r.tracks[j.id] = t
	}
	r.reportSlow(jobs, tracks)
	for _, k := range kills {
		wait, held := Recovery(k.slot, k.at, tracks, hold, end)
		if held == 0 {
			r.logf("kill of worker-%d at +%.1fs held no job", k.slot, k.at.Sub(r.start).Seconds())
			continue
		}
		r.logf("kill of worker-%d at +%.1fs held %d jobs; all moved again after %.1fs", k.slot, k.at.Sub(r.start).Seconds(), held, wait.Seconds())
		obs.Recoveries = append(obs.Recoveries, wait)
	}
	// Not part of the summary line (which measures worker kills), but a
	// Redis restart strands tasks too: show how long their jobs waited.
	for _, k := range redisKills {
		wait, held := Recovery(-1, k.at, tracks, hold, end)
		r.logf("kill -9 of redis at +%.1fs: %d jobs in flight; all moved again after %.1fs", k.at.Sub(r.start).Seconds(), held, wait.Seconds())
	}
	return Judge(obs)
}

// slow is how long after its enqueue a job must still lack its final
// webhook to be listed: generation takes 2-5 s and a receiver outage up to
// 12 s, so a job slower than this waited for something else.
const slow = 30 * time.Second

// reportSlow prints how long jobs took from enqueue to final webhook, and
// the timeline of each slow one: where a guarantee holds only thanks to a
// slow recovery, this is where it shows.
func (r *run) reportSlow(jobs []job, tracks []Track) {
	var took []time.Duration
	shown := 0
	for i, j := range jobs {
		t := tracks[i]
		if t.FinalAt.IsZero() {
			continue
		}
		d := t.FinalAt.Sub(j.at)
		took = append(took, d)
		if d < slow {
			continue
		}
		if shown++; shown > 20 {
			continue
		}
		r.logf("slow job %s (%s): enqueued +%.1fs, final webhook +%.1fs (%.1fs); CSM requests:%s",
			j.id, j.session, j.at.Sub(r.start).Seconds(), t.FinalAt.Sub(r.start).Seconds(), d.Seconds(), r.timeline(t))
		for _, line := range r.logLines(j.id, 4) {
			r.logf("    %s", line)
		}
	}
	if shown > 20 {
		r.logf("... and %d more slow jobs", shown-20)
	}
	p50, maxD := percentiles(took)
	r.logf("enqueue to final webhook: p50 %.1fs, max %.1fs over %d jobs; %d took %s or more", p50.Seconds(), maxD.Seconds(), len(took), shown, slow)
}

// timeline lists a job's CSM requests: worker slot, kind, seconds since
// the start.
func (r *run) timeline(t Track) string {
	var b strings.Builder
	for _, c := range t.Contacts {
		what := "GET"
		if c.Post {
			what = "POST"
		}
		fmt.Fprintf(&b, " w%d:%s@%.1f", c.Slot, what, c.At.Sub(r.start).Seconds())
	}
	if b.Len() == 0 {
		return " none"
	}
	return b.String()
}

// report prints the problems, with the workers' warnings about each job,
// then the summary line, last.
func (r *run) report(v Verdict) {
	_, rejected := r.rcv.Totals()
	if rejected > 0 {
		r.logf("%d webhook deliveries failed signature verification", rejected)
	}
	const maxShown = 20
	for i, p := range v.Problems {
		if i == maxShown {
			r.logf("... and %d more problems", len(v.Problems)-maxShown)
			break
		}
		r.logf("%s: job %s %s", p.What, p.JobID, p.Detail)
		if t, ok := r.tracks[p.JobID]; ok {
			r.logf("    CSM requests:%s", r.timeline(t))
		}
		if p.JobID != "" {
			for _, line := range r.logLines(p.JobID, 6) {
				r.logf("    %s", line)
			}
		}
	}
	if v.Unsent > 0 {
		r.logf("%d jobs ended preview_unconfirmed with no POST ever reaching CSM: their worker died between recording the intent and writing the POST (nothing billed, final webhook sent)", v.Unsent)
	}
	r.outMu.Lock()
	defer r.outMu.Unlock()
	fmt.Fprintln(r.opts.Out, v.Line())
}

// logLines returns the last n warning or error lines of the worker logs
// that mention jobID.
func (r *run) logLines(jobID string, n int) []string {
	var out []string
	for i := range r.workers {
		f, err := os.Open(filepath.Join(r.dir, fmt.Sprintf("worker-%d.log", i)))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			// Refused webhook attempts are the receiver outage, expected.
			if strings.Contains(line, jobID) && (strings.Contains(line, `"level":"warn"`) || strings.Contains(line, `"level":"error"`)) &&
				!strings.Contains(line, "will retry") {
				out = append(out, fmt.Sprintf("worker-%d: %s", i, line))
			}
		}
		f.Close()
	}
	if len(out) > n {
		out = out[len(out)-n:]
	}
	return out
}
