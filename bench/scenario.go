package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"

	"github.com/previewd/previewd/csm"
	"github.com/previewd/previewd/store"
	"github.com/previewd/previewd/tasks"
	"github.com/previewd/previewd/webhook"
	"github.com/previewd/previewd/worker"
)

// DefaultPollShare is cmd/previewd's share of the CSM rate limit kept for
// polls (its pollShare, which it passes in); the scenarios' default.
const DefaultPollShare = 0.7

// callLog records when the simulator was called, per session code and
// endpoint, while on: the scenarios judge polls and requests by it. Off,
// it costs one atomic load per call.
type callLog struct {
	on    atomic.Bool
	mu    sync.Mutex
	gets  map[string][]time.Time
	posts map[string][]time.Time
}

func newCallLog() *callLog {
	return &callLog{gets: map[string][]time.Time{}, posts: map[string][]time.Time{}}
}

const (
	sessionsPath = "/image-to-3d-sessions/"
	previewPath  = "/image-to-3d-sessions/get-3d/preview/"
)

// wrap records each call to h, at its arrival, before h answers it.
func (l *callLog) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if l.on.Load() {
			l.record(req.Method, req.URL.Path, time.Now())
		}
		h.ServeHTTP(w, req)
	})
}

func (l *callLog) record(method, path string, at time.Time) {
	var m map[string][]time.Time
	code := ""
	if rest, ok := strings.CutPrefix(path, previewPath); ok && method == http.MethodPost {
		code, m = rest, l.posts
	} else if rest, ok := strings.CutPrefix(path, sessionsPath); ok && method == http.MethodGet {
		code, m = rest, l.gets
	}
	if code == "" {
		return
	}
	l.mu.Lock()
	m[code] = append(m[code], at)
	l.mu.Unlock()
}

// gets returns the session's GET times, in order.
func (l *callLog) getsOf(code string) []time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]time.Time(nil), l.gets[code]...)
}

// count counts the calls in [from, to): GETs that came before the
// session's first POST (a request's read), GETs after it (polls), POSTs.
func (l *callLog) count(from, to time.Time) (reads, polls, posts int) {
	in := func(t time.Time) bool { return !t.Before(from) && t.Before(to) }
	l.mu.Lock()
	defer l.mu.Unlock()
	for code, gs := range l.gets {
		var first time.Time
		if ps := l.posts[code]; len(ps) > 0 {
			first = ps[0]
		}
		for _, g := range gs {
			switch {
			case !in(g):
			case first.IsZero() || g.Before(first):
				reads++
			default:
				polls++
			}
		}
	}
	for _, ps := range l.posts {
		for _, p := range ps {
			if in(p) {
				posts++
			}
		}
	}
	return reads, polls, posts
}

// liveWorker is one previewd worker of a scenario, wired as cmd/previewd
// wires it with a CSM rate limit: the shared Redis limiter with a share
// kept for polls, told of every turn it grants.
type liveWorker struct {
	ns       string
	queues   tasks.Queues
	producer *tasks.Client
	// turns granted by the limiter: [0] "poll" (Wait: polls and the read
	// before a request's POST), [1] "request" (WaitRequest: the POST).
	turns [2]atomic.Int64
	done  chan error
	halt  context.CancelFunc
}

// limiterSpec is the CSM rate limit of a scenario's worker.
type limiterSpec struct {
	rate, burst int
	pollShare   float64
}

// startWorker starts a worker on namespace ns and waits until its servers
// run.
func (r *rig) startWorker(ctx context.Context, ns string, polling worker.PollPolicy, lim limiterSpec) (*liveWorker, error) {
	secret, err := webhook.ParseSecret(r.secret)
	if err != nil {
		return nil, fmt.Errorf("webhook secret: %w", err)
	}
	lw := &liveWorker{ns: ns, queues: tasks.QueuesFor(ns), done: make(chan error, 1)}
	rl := csm.NewRedisLimiter(r.rdb, ns+":ratelimit:csm", lim.rate, lim.burst).ReservePolls(lim.pollShare)
	rl.OnTurn = func(class string, _ time.Duration) {
		if class == "request" {
			lw.turns[1].Add(1)
		} else {
			lw.turns[0].Add(1)
		}
	}
	client, err := csm.New(csm.Options{BaseURL: r.simURL, APIKey: r.apiKey, Timeout: 30 * time.Second, Limiter: rl})
	if err != nil {
		return nil, fmt.Errorf("csm client: %w", err)
	}
	st := store.New(r.rdb, store.Options{Namespace: ns})
	w := worker.New(r.rdb, worker.Deps{
		Store:  st,
		CSM:    client,
		Sender: webhook.NewSender(webhook.SenderOptions{AllowPrivate: true}),
		Signer: webhook.NewSigner(secret),
	}, worker.Options{
		Queues:             lw.queues,
		Polling:            polling,
		Concurrency:        r.opts.Concurrency,
		WebhookConcurrency: r.opts.Concurrency,
		ShutdownTimeout:    5 * time.Second,
	})
	lw.producer = tasks.NewClient(r.rdb, tasks.ClientOptions{Namespace: ns, AllowPrivateWebhooks: true})
	before := serverCount(ctx, r.rdb)
	wctx, halt := context.WithCancel(ctx)
	lw.halt = halt
	go func() { lw.done <- w.Run(wctx) }()
	if err := awaitServers(ctx, r.rdb, before, 2); err != nil {
		_ = lw.stop()
		return nil, err
	}
	return lw, nil
}

// stop stops the worker once and returns what Run returned.
func (lw *liveWorker) stop() error {
	if lw.halt == nil {
		return nil
	}
	lw.halt()
	lw.halt = nil
	return <-lw.done
}

// enqueue asks for a preview of session code, as the API would.
func (lw *liveWorker) enqueue(ctx context.Context, r *rig, code string, i int) (string, error) {
	job, err := lw.producer.RequestPreview(ctx, tasks.PreviewRequest{
		SessionCode:       code,
		SelectedSpinIndex: i % 4,
		WebhookURL:        r.hooksURL,
		ExternalID:        fmt.Sprintf("bench-%d", i),
	})
	return job.ID, err
}

// queued counts the tasks of queue q not yet done: pending, active,
// scheduled or retrying.
func (r *rig) queued(q string) (int, error) {
	insp := asynq.NewInspectorFromRedisClient(r.rdb)
	if known, err := insp.Queues(); err == nil && !slices.Contains(known, q) {
		return 0, nil // never used (asynq's not-found error is not one errors.Is knows)
	}
	info, err := insp.GetQueueInfo(q)
	if err != nil {
		return 0, fmt.Errorf("queue %s: %w", q, err)
	}
	return info.Pending + info.Active + info.Scheduled + info.Retry, nil
}

// accepted counts the sessions with an accepted preview POST, and the
// POSTs accepted over them.
func (r *rig) accepted(codes []string) (sessions, posts int) {
	for _, c := range codes {
		if n := r.sim.AcceptedPreviews(c); n > 0 {
			sessions++
			posts += n
		}
	}
	return sessions, posts
}

// awaitAccepted waits until every session has an accepted preview.
func (r *rig) awaitAccepted(ctx context.Context, codes []string, limit time.Duration) error {
	return waitFor(ctx, limit, "every preview POST", func() bool {
		n, _ := r.accepted(codes)
		return n == len(codes)
	}, func() string {
		n, _ := r.accepted(codes)
		return fmt.Sprintf("%d of %d accepted", n, len(codes))
	})
}

// awaitFinalsWithin is awaitFinals with its own limit, for jobs that
// finish in any order: each check pops the finished ones from the front,
// so that waiting costs next to no CPU.
func (r *rig) awaitFinalsWithin(ctx context.Context, jobIDs []string, limit time.Duration) error {
	pending := jobIDs
	return waitFor(ctx, limit, "every final webhook", func() bool {
		for len(pending) > 0 {
			if _, ok := r.rcv.Final(pending[0]); !ok {
				break
			}
			pending = pending[1:]
		}
		return len(pending) == 0
	}, func() string { return fmt.Sprintf("%d of %d received", r.finals(jobIDs), len(jobIDs)) })
}

// writeJSON writes v as indented JSON.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// loadAverage is the machine's 1-minute load average and CPU count, for
// the scenarios' output: a busy machine makes late polls that no budget
// explains. Empty where /proc/loadavg cannot be read.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return ""
	}
	return fmt.Sprintf("load average %s on %d CPUs", f[0], runtime.NumCPU())
}

// machineAt describes the load from start (a loadAverage) to now.
func machineAt(start string) string {
	end := loadAverage()
	if start == "" || end == "" {
		return ""
	}
	return start + " at the start, " + strings.Fields(end)[2] + " at the end"
}
