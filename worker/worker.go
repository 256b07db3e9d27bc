// Package worker runs previewd's asynq handlers: it sends the preview POST of
// each job (at most once), polls the session until a final status, and
// delivers the signed webhooks the jobs emit. It also owns the asynq server
// set-up (queues, retry pacing, graceful shutdown) and a sweeper that
// re-enqueues outboxes left by crashed processes and times out jobs whose
// poll chain died.
package worker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/previewd/previewd/csm"
	"github.com/previewd/previewd/store"
	"github.com/previewd/previewd/tasks"
	"github.com/previewd/previewd/webhook"
)

// Options configure a Worker. Zero values take sane defaults.
type Options struct {
	Queues             tasks.Queues
	Polling            PollPolicy
	Webhooks           WebhookPolicy
	Concurrency        int           // preview tasks at once; default 10
	WebhookConcurrency int           // webhook deliveries at once; default 10
	ShutdownTimeout    time.Duration // default 10s
	SweepInterval      time.Duration // default 15s
	// JobDeadline is the producers' job deadline: with the retention period
	// it bounds how long a job can exist, beyond which the sweeper trims
	// listing indexes. Default 3h.
	JobDeadline time.Duration
	// Liveness (see liveness.go): WorkerID names this process in the
	// heartbeat and in-flight records; it must be unique to it (default a
	// fresh UUID). The heartbeat is refreshed every HeartbeatInterval
	// (default 1s) and expires after DeadAfter (default 8s), when peers
	// rescue the worker's tasks; each worker looks for dead peers every
	// RescueInterval (default 2s).
	WorkerID          string
	HeartbeatInterval time.Duration
	DeadAfter         time.Duration
	RescueInterval    time.Duration
	Logger            *zap.Logger
	Observer          Observer
	Now               func() time.Time
	// Budget is the spending guard (nil: none); see Budget.
	Budget Budget
	// WriteBudget bounds how long a write that must happen (what became of
	// a preview POST) retries through Redis faults. Default 20s: longer
	// than a Sentinel failover.
	WriteBudget time.Duration
}

// Deps are the Worker's collaborators.
type Deps struct {
	Store  *store.Store
	CSM    CSM
	Sender Sender
	Signer *webhook.Signer
}

// Worker is one worker process's share of the work. Run as many as needed,
// on as many machines: they coordinate only through Redis.
type Worker struct {
	rdb      redis.UniversalClient
	handlers *Handlers
	store    *store.Store
	enqueuer *tasks.Enqueuer
	opts     Options
	log      *zap.Logger
	live     *liveness
}

// New returns a Worker on rdb, which it does not close.
func New(rdb redis.UniversalClient, deps Deps, opts Options) *Worker {
	if opts.Queues == (tasks.Queues{}) {
		opts.Queues = tasks.QueuesFor("previewd")
	}
	if opts.Polling.Interval <= 0 {
		opts.Polling.Interval = 5 * time.Second
	}
	if opts.Polling.MaxInterval < opts.Polling.Interval {
		opts.Polling.MaxInterval = max(time.Minute, opts.Polling.Interval)
	}
	if opts.Polling.ReconcileGrace <= 0 {
		opts.Polling.ReconcileGrace = 10 * time.Minute
	}
	opts.Webhooks.defaults()
	if opts.Concurrency <= 0 {
		opts.Concurrency = 10
	}
	if opts.WebhookConcurrency <= 0 {
		opts.WebhookConcurrency = 10
	}
	if opts.ShutdownTimeout <= 0 {
		opts.ShutdownTimeout = 10 * time.Second
	}
	if opts.JobDeadline <= 0 {
		opts.JobDeadline = 3 * time.Hour
	}
	if opts.SweepInterval <= 0 {
		opts.SweepInterval = 15 * time.Second
	}
	opts.livenessDefaults()
	if opts.WriteBudget <= 0 {
		opts.WriteBudget = defaultWriteBudget
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.Observer == nil {
		opts.Observer = NopObserver{}
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	ac := asynq.NewClientFromRedisClient(rdb)
	enq := tasks.NewEnqueuer(ac, deps.Store, opts.Queues)
	return &Worker{
		rdb:      rdb,
		store:    deps.Store,
		enqueuer: enq,
		opts:     opts,
		log:      opts.Logger,
		live:     newLiveness(ac),
		handlers: &Handlers{
			store:    deps.Store,
			csm:      deps.CSM,
			sender:   deps.Sender,
			tasks:    enq,
			signer:   deps.Signer,
			log:      opts.Logger,
			now:      opts.Now,
			polling:  opts.Polling,
			webhooks: opts.Webhooks,
			metrics:  opts.Observer,
			budget:   opts.Budget,

			writeBudget: opts.WriteBudget,
		},
	}
}

// Handlers returns the worker's task handlers.
func (w *Worker) Handlers() *Handlers { return w.handlers }

// Handler returns the asynq handler for every previewd task type: exact
// type names (asynq's ServeMux matches prefixes), wrapped in guard and,
// outermost, in track (the in-flight record that liveness rescues from).
func (w *Worker) Handler() asynq.Handler {
	h := w.handlers
	return w.track(h.guard(asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		switch t.Type() {
		case tasks.TypeRequestPreview:
			return h.RequestPreview(ctx, t)
		case tasks.TypePollPreview:
			return h.PollPreview(ctx, t)
		case tasks.TypeDeliverWebhook:
			return h.DeliverWebhook(ctx, t)
		case tasks.TypeFanoutWebhook:
			return h.FanoutWebhook(ctx, t)
		}
		return fmt.Errorf("%w: unknown task type %q", tasks.ErrMalformed, t.Type())
	})))
}

// Run processes tasks until ctx is done, then drains: it stops taking
// tasks, cancels the contexts of those in flight (they return at once and
// are re-run by any worker without spending a retry), and waits for them.
func (w *Worker) Run(ctx context.Context) error {
	// Handler contexts derive from this, not from ctx: asynq would otherwise
	// keep them alive until its ShutdownTimeout.
	baseCtx, cancelBase := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelBase()

	q := w.opts.Queues
	previews := w.server(baseCtx, []string{q.Polls, q.Previews}, w.opts.Concurrency)
	webhooks := w.server(baseCtx, q.Deliveries(), w.opts.WebhookConcurrency)
	handler := w.Handler()
	// Liveness outlives the drain: handlers still running must not look dead.
	stopLiveness := w.startLiveness(ctx)
	if err := previews.Start(handler); err != nil {
		stopLiveness()
		return fmt.Errorf("start preview server: %w", err)
	}
	if err := webhooks.Start(handler); err != nil {
		previews.Shutdown()
		stopLiveness()
		return fmt.Errorf("start webhook server: %w", err)
	}
	var wg sync.WaitGroup
	sweepCtx, stopSweeper := context.WithCancel(baseCtx)
	wg.Go(func() { w.sweepLoop(sweepCtx) })
	w.log.Info("worker started",
		zap.Strings("preview_queues", []string{q.Polls, q.Previews}), zap.Int("concurrency", w.opts.Concurrency),
		zap.Strings("webhook_queues", q.Deliveries()), zap.Int("webhook_concurrency", w.opts.WebhookConcurrency))

	<-ctx.Done()
	w.log.Info("worker draining")
	previews.Stop()
	webhooks.Stop()
	stopSweeper()
	cancelBase()
	var shutdown sync.WaitGroup
	shutdown.Go(previews.Shutdown)
	shutdown.Go(webhooks.Shutdown)
	shutdown.Wait()
	// Preview POSTs run detached from the drain (an answered POST must be
	// recorded, not cut into an unknown outcome); wait for them.
	w.handlers.posts.Wait()
	// No delivery runs now: the receiver seats kept for reuse go back.
	releaseCtx, cancelRelease := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	w.store.ReleaseKeptSlots(releaseCtx)
	cancelRelease()
	stopLiveness()
	wg.Wait()
	w.log.Info("worker stopped")
	return nil
}

// server builds one asynq server: one for preview work and one for webhook
// deliveries, so that they never wait for each other's workers. Each serves
// its queues, most urgent first, with strict priority: a task of a later
// queue is taken only when the earlier ones have nothing due. A backlog of
// new requests thus never delays a due poll by more than the time one
// running task takes to free its worker, whatever the backlog's length.
// Strict priority cannot starve the later queue for good: polls are paced
// per job (one chain, at most one poll a Polling.Interval) and a job has one
// final event, so the urgent queues drain whenever the workers are not
// already too few for the running jobs alone; then holding new requests
// back is the backpressure wanted, not a fault (weights would instead let a
// backlog of requests take a share of the workers from due polls).
func (w *Worker) server(baseCtx context.Context, queues []string, concurrency int) *asynq.Server {
	priorities := make(map[string]int, len(queues))
	for i, q := range queues {
		priorities[q] = len(queues) - i
	}
	// ProcessIn has one-second granularity; checking for due tasks this
	// often makes a 1 s poll interval really fire about every second.
	check := min(time.Second, w.opts.Polling.Interval/2)
	return asynq.NewServerFromRedisClient(w.rdb, asynq.Config{
		Concurrency:              concurrency,
		BaseContext:              func() context.Context { return baseCtx },
		Queues:                   priorities,
		StrictPriority:           true,
		IsFailure:                isFailure,
		RetryDelayFunc:           w.retryDelay,
		ErrorHandler:             asynq.ErrorHandlerFunc(w.handlers.handleError),
		Logger:                   asynqLogger{w.log.Named("asynq")},
		LogLevel:                 asynq.WarnLevel,
		ShutdownTimeout:          w.opts.ShutdownTimeout,
		DelayedTaskCheckInterval: check,
		TaskCheckInterval:        w.opts.Polling.taskCheckInterval(check),
	})
}

// isFailure: a task cut short by shutdown did not fail, nor did a delivery
// snoozed because its receiver is busy, nor a request waiting for the
// spending budget or for its intent to reach the replicas; none spends a
// retry (the job's deadline still bounds the wait).
func isFailure(err error) bool {
	if err == nil {
		return false
	}
	for _, wait := range []error{context.Canceled, errDestinationBusy, errBudgetExhausted, store.ErrNotReplicated} {
		if errors.Is(err, wait) {
			return false
		}
	}
	return true
}

// guard is the middleware around every handler: a malformed task is
// archived with its reason instead of retried, and a panic becomes an
// archived task with the panic recorded, never a crashed worker or an
// endless retry loop.
func (h *Handlers) guard(next asynq.Handler) asynq.Handler {
	return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) (err error) {
		defer func() {
			if r := recover(); r != nil {
				id, _ := asynq.GetTaskID(ctx)
				h.log.Error("task handler panicked; task archived", zap.String("task_type", t.Type()),
					zap.String("task_id", id), zap.Any("panic", r), zap.Stack("stack"))
				err = fmt.Errorf("handler panic: %v: %w", r, asynq.SkipRetry)
			}
		}()
		err = next.ProcessTask(ctx, t)
		if errors.Is(err, tasks.ErrMalformed) {
			id, _ := asynq.GetTaskID(ctx)
			h.log.Error("malformed task archived", zap.String("task_type", t.Type()), zap.String("task_id", id), zap.Error(err))
			return fmt.Errorf("%w: %w", err, asynq.SkipRetry)
		}
		return err
	})
}

// handleError runs for every handler error. When a request or poll task is
// given up on (retries exhausted, or archived), its job is failed with the
// reason, so no job waits silently for a task that will never run.
func (h *Handlers) handleError(ctx context.Context, t *asynq.Task, err error) {
	if !isFailure(err) {
		return // shutdown or a snooze; it runs again
	}
	retried, _ := asynq.GetRetryCount(ctx)
	maxRetry, _ := asynq.GetMaxRetry(ctx)
	if retried < maxRetry && !errors.Is(err, asynq.SkipRetry) {
		return // the handler logged it; a retry follows
	}
	var jobID string
	switch t.Type() {
	case tasks.TypeRequestPreview:
		if p, derr := tasks.Decode[tasks.RequestPreview](t); derr == nil {
			jobID = p.JobID
		}
	case tasks.TypePollPreview:
		if p, derr := tasks.Decode[tasks.PollPreview](t); derr == nil {
			jobID = p.JobID
		}
	}
	id, _ := asynq.GetTaskID(ctx)
	log := h.log.With(zap.String("task_type", t.Type()), zap.String("task_id", id), zap.String("job_id", jobID), zap.Int("attempt", retried+1))
	log.Error("task given up", zap.Error(err))
	if t.Type() == tasks.TypeDeliverWebhook || t.Type() == tasks.TypeFanoutWebhook {
		// Its messages are settled as given up, never left pending.
		h.giveUpMessages(ctx, log, t, retried+1, err)
		return
	}
	if jobID == "" {
		return
	}
	bctx, cancel := bookkeeping(ctx)
	defer cancel()
	// The task is given up: it does not run again, so the change is not redone.
	if ferr := h.finishJob(bctx, log, jobID, store.StatusFailed, store.CodeRetriesExhausted, "gave up after "+fmt.Sprint(retried+1)+" attempts: "+err.Error(), false); ferr != nil {
		log.Error("could not fail the job of a task given up", zap.Error(ferr))
	}
}

// asynqLogger adapts zap to asynq's logger.
type asynqLogger struct{ l *zap.Logger }

func (a asynqLogger) Debug(args ...any) { a.l.Sugar().Debug(args...) }
func (a asynqLogger) Info(args ...any)  { a.l.Sugar().Info(args...) }
func (a asynqLogger) Warn(args ...any)  { a.l.Sugar().Warn(args...) }
func (a asynqLogger) Error(args ...any) { a.l.Sugar().Error(args...) }

// Fatal logs at error level: asynq calls it for conditions we would rather
// see than die of.
func (a asynqLogger) Fatal(args ...any) { a.l.Sugar().Error(args...) }

// outcomeOf names the outcome of a CSM call for metrics.
func outcomeOf(err error) string {
	if err == nil {
		return "ok"
	}
	var ce *csm.Error
	if errors.As(err, &ce) {
		return string(ce.Kind)
	}
	return "error"
}
