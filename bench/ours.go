package bench

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/hibiken/asynq"

	"github.com/previewd/previewd/csm"
	"github.com/previewd/previewd/store"
	"github.com/previewd/previewd/tasks"
	"github.com/previewd/previewd/webhook"
	"github.com/previewd/previewd/worker"
)

// ours runs previewd's real workers over the phase's jobs, wired as
// cmd/previewd wires them: the producer API enqueues, one worker.Worker
// (its two asynq servers, liveness and sweeper) processes, the CSM client
// talks to the simulator without a rate limit, and the webhook sender
// delivers signed webhooks to the receiver.
func (r *rig) ours(ctx context.Context) (Phase, error) {
	ns := r.namespace("ours")
	defer r.cleanup(ns)
	secret, err := webhook.ParseSecret(r.secret)
	if err != nil {
		return Phase{}, fmt.Errorf("webhook secret: %w", err)
	}
	client, err := csm.New(csm.Options{BaseURL: r.simURL, APIKey: r.apiKey, Timeout: 30 * time.Second})
	if err != nil {
		return Phase{}, fmt.Errorf("csm client: %w", err)
	}
	st := store.New(r.rdb, store.Options{Namespace: ns, SlotReuse: store.DefaultSlotReuse}) // as cmd/previewd's worker
	queues := tasks.QueuesFor(ns)
	w := worker.New(r.rdb, worker.Deps{
		Store:  st,
		CSM:    client,
		Sender: webhook.NewSender(webhook.SenderOptions{AllowPrivate: true}),
		Signer: webhook.NewSigner(secret),
	}, worker.Options{
		Queues:             queues,
		Polling:            worker.PollPolicy{Interval: r.opts.PollInterval, MaxInterval: r.opts.PollInterval},
		Concurrency:        r.opts.Concurrency,
		WebhookConcurrency: r.opts.Concurrency,
		ShutdownTimeout:    5 * time.Second,
	})
	producer := tasks.NewClient(r.rdb, tasks.ClientOptions{Namespace: ns, AllowPrivateWebhooks: true})

	before := serverCount(ctx, r.rdb)
	workerCtx, stopWorker := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(workerCtx) }()
	stop := func() error {
		if stopWorker == nil {
			return nil
		}
		stopWorker()
		stopWorker = nil
		return <-done
	}
	defer func() { _ = stop() }() // the error paths; the happy path checks it
	if err := awaitServers(ctx, r.rdb, before, 2); err != nil {
		return Phase{}, err
	}

	n := r.opts.Jobs
	codes, ids := make([]string, n), make([]string, n)
	for i := range n {
		codes[i] = fmt.Sprintf("BENCH_%s_OURS_%05d", r.run[:8], i)
		r.sim.AddSession(codes[i], session)
	}
	stopProfile, err := r.startProfile()
	if err != nil {
		return Phase{}, err
	}
	m, err := r.startMeter(ctx)
	if err != nil {
		_ = stopProfile()
		return Phase{}, err
	}
	err = enqueueAll(ctx, n, func(ctx context.Context, i int) error {
		job, err := producer.RequestPreview(ctx, tasks.PreviewRequest{
			SessionCode:       codes[i],
			SelectedSpinIndex: i % 4,
			WebhookURL:        r.hooksURL,
			ExternalID:        fmt.Sprintf("bench-%d", i),
		})
		ids[i] = job.ID
		return err
	})
	var last time.Time
	if err == nil {
		last, err = r.awaitFinals(ctx, ids)
	}
	if err != nil {
		_ = stopProfile()
		return Phase{}, err
	}
	win, err := m.stop(ctx)
	win.elapsed = last.Sub(m.start) // to the last final webhook, not to when the bench noticed it
	if perr := stopProfile(); perr != nil && err == nil {
		err = perr
	}
	if err != nil {
		return Phase{}, err
	}
	// Let the deliveries still queued (progress events) finish before the
	// worker stops, so that what is left in Redis is what a finished job
	// keeps, not work in flight. This is outside the measured window.
	if err := r.awaitDrained(ctx, queues.All()...); err != nil {
		return Phase{}, err
	}
	if err := stop(); err != nil {
		return Phase{}, fmt.Errorf("worker: %w", err)
	}
	p := Phase{Name: "previewd", Jobs: n, Finished: r.finals(ids)}
	p.finish(win)
	r.upstream(&p, codes, ids)
	use, err := namespaceMemory(ctx, r.rdb, ns+":*", "asynq:{"+ns+":*")
	if err != nil {
		return Phase{}, err
	}
	p.setMemory(use)
	return p, nil
}

// awaitDrained waits until the queues hold no pending, active, scheduled
// or retrying task.
func (r *rig) awaitDrained(ctx context.Context, queues ...string) error {
	insp := asynq.NewInspectorFromRedisClient(r.rdb)
	left := func() (int, error) {
		known, err := insp.Queues()
		if err != nil {
			return 0, err
		}
		n := 0
		for _, q := range queues {
			if !slices.Contains(known, q) {
				continue // never used: with every webhook sent inline, no delivery task was enqueued
			}
			info, err := insp.GetQueueInfo(q)
			if err != nil {
				return 0, err
			}
			n += info.Pending + info.Active + info.Scheduled + info.Retry
		}
		return n, nil
	}
	return waitFor(ctx, 30*time.Second, "the queues to drain", func() bool {
		n, err := left()
		return err == nil && n == 0
	}, func() string {
		n, err := left()
		if err != nil {
			return err.Error()
		}
		return fmt.Sprintf("%d tasks left", n)
	})
}
