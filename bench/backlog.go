package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/hibiken/asynq"

	"github.com/previewd/previewd/csmsim"
	"github.com/previewd/previewd/tasks"
	"github.com/previewd/previewd/worker"
)

// BacklogOptions configure the backlog scenario (RunBacklog). Zero values
// take the defaults.
type BacklogOptions struct {
	// Base gives the Redis, the concurrency, Short and Out; its job count
	// and poll interval are not used.
	Base Options
	// Running jobs are requested first; once CSM accepted every one, the
	// backlog is queued behind them. Default 50, or 10 with Short.
	Running int
	// Backlogs are the backlog sizes, one round each; default 0 (the
	// reference: the running jobs alone), 100 and 10,000, or 0, 20 and 200
	// with Short.
	Backlogs []int
	// GenerationTime is how long the running jobs' previews take; default
	// 10 s, or 4 s with Short.
	GenerationTime time.Duration
	// PollInterval is the worker's poll interval (not growing); default 5s,
	// or 2s with Short.
	PollInterval time.Duration
	// RateLimit is the CSM rate limit in calls a second, burst twice that
	// (PREVIEWD_CSM_RATE_BURST's default proportion); default 15, or 30
	// with Short: low enough that 100 requests (at the requests' 30%,
	// 4.5/s) are still queued when the running jobs finish.
	RateLimit int
	// PollShare is the share of the rate kept for polls; default
	// DefaultPollShare.
	PollShare float64
}

func (o *BacklogOptions) defaults() error {
	if err := o.Base.defaults(); err != nil {
		return err
	}
	short := o.Base.Short
	pick := func(full, small int) int {
		if short {
			return small
		}
		return full
	}
	if o.Running == 0 {
		o.Running = pick(50, 10)
	}
	if len(o.Backlogs) == 0 {
		o.Backlogs = []int{0, pick(100, 20), pick(10000, 200)}
	}
	if o.GenerationTime == 0 {
		o.GenerationTime = time.Duration(pick(10, 4)) * time.Second
	}
	if o.PollInterval == 0 {
		o.PollInterval = time.Duration(pick(5, 2)) * time.Second
	}
	if o.RateLimit == 0 {
		o.RateLimit = pick(15, 30)
	}
	if o.PollShare == 0 {
		o.PollShare = DefaultPollShare
	}
	switch {
	case o.Running < 1 || o.Running > 10000:
		return fmt.Errorf("running jobs must be between 1 and 10000, got %d", o.Running)
	case o.GenerationTime < time.Second:
		return fmt.Errorf("generation time must be at least 1s, got %s", o.GenerationTime)
	case o.PollInterval < time.Second:
		return fmt.Errorf("poll interval must be at least 1s, got %s", o.PollInterval)
	case o.RateLimit < 1:
		return fmt.Errorf("rate limit must be at least 1, got %d", o.RateLimit)
	case o.PollShare <= 0 || o.PollShare >= 1:
		return fmt.Errorf("poll share must be between 0 and 1, got %v", o.PollShare)
	}
	for _, b := range o.Backlogs {
		if b < 0 || b > 100000 {
			return fmt.Errorf("backlog sizes must be between 1 and 100000, got %d", b)
		}
	}
	return nil
}

// BacklogRound is what one backlog size measured.
type BacklogRound struct {
	Backlog int `json:"backlog"`
	// Running and Finished count the running jobs and those whose final
	// webhook the receiver got.
	Running        int     `json:"running"`
	Finished       int     `json:"finished"`
	DetectionP50ms float64 `json:"detection_p50_ms"`
	DetectionP99ms float64 `json:"detection_p99_ms"`
	DetectionMaxms float64 `json:"detection_max_ms"`
	// BacklogAccepted is how many backlog jobs CSM accepted by the time
	// the last running job was detected; BacklogQueuedAtEnd how many
	// request tasks still waited then (the backlog was really queued while
	// the running jobs finished when it is above 0).
	BacklogAccepted    int `json:"backlog_accepted"`
	BacklogQueuedAtEnd int `json:"backlog_queued_at_end"`
	// BacklogLeft is how many backlog jobs CSM had not accepted when the
	// worker stopped but whose request task asynq still holds, BacklogLost
	// how many have neither (none should), and BacklogPOSTs the POSTs CSM
	// accepted for the backlog in all. Each job is counted once:
	// BacklogAcceptedAll + BacklogLeft + BacklogLost == Backlog (a job
	// accepted whose task a shutdown put back counts as accepted).
	BacklogAcceptedAll int     `json:"backlog_accepted_all"`
	BacklogPOSTs       int     `json:"backlog_posts"`
	BacklogLeft        int     `json:"backlog_left"`
	BacklogLost        int     `json:"backlog_lost"`
	Seconds            float64 `json:"seconds"`
	// Upstream is what the simulator saw from the backlog's enqueueing to
	// the last running job's final webhook, RateLimit the limit.
	Upstream  BudgetWindow `json:"upstream"`
	RateLimit int          `json:"rate_limit"`
	// Machine is the load average at the start and the end.
	Machine string `json:"machine"`
}

// BacklogResult is a whole backlog run.
type BacklogResult struct {
	Redis            string         `json:"redis"`
	Running          int            `json:"running"`
	GenerationTimeMs float64        `json:"generation_time_ms"`
	PollIntervalMs   float64        `json:"poll_interval_ms"`
	RateLimit        int            `json:"rate_limit"`
	PollShare        float64        `json:"poll_share"`
	Rounds           []BacklogRound `json:"rounds"`
	// P99Ratio is the last round's detection p99 over that of the first
	// round with a backlog.
	P99Ratio float64 `json:"p99_ratio"`
}

// FinalLine is the line a backlog run ends with.
func (b BacklogResult) FinalLine() string {
	first, last := b.compared()
	return fmt.Sprintf("backlog: %d running jobs, detection p50 %.0f ms p99 %.0f ms with %d queued, p50 %.0f ms p99 %.0f ms with %d queued: p99 ratio %.2f",
		b.Running, first.DetectionP50ms, first.DetectionP99ms, first.Backlog, last.DetectionP50ms, last.DetectionP99ms, last.Backlog, b.P99Ratio)
}

// compared returns the rounds the ratio compares: the first with a backlog
// (the first of all when none has one) and the last.
func (b BacklogResult) compared() (first, last BacklogRound) {
	first, last = b.Rounds[0], b.Rounds[len(b.Rounds)-1]
	for _, r := range b.Rounds {
		if r.Backlog > 0 {
			return r, last
		}
	}
	return first, last
}

// JSON writes the result as indented JSON.
func (b BacklogResult) JSON(w io.Writer) error { return writeJSON(w, b) }

// RunBacklog measures whether a backlog of new requests delays the running
// jobs: for each backlog size, on a fresh namespace, previewd's real worker
// (with the CSM rate limit and the polls' share as cmd/previewd wires them)
// gets Running jobs; once CSM accepted all of them, Backlog more requests
// are queued behind; the round ends when every running job's final webhook
// arrived. Their detection delay (session final at the simulator → final
// webhook received) is the figure: strict queue priorities and the polls'
// share should keep it the same whatever the backlog's length. The rate
// limit holds the backlog back, so that it is still queued when the
// running jobs finish (BacklogQueuedAtEnd says whether it was). Backlog
// sessions finish at once: an accepted backlog job costs one poll.
func RunBacklog(ctx context.Context, opts BacklogOptions) (BacklogResult, error) {
	if err := opts.defaults(); err != nil {
		return BacklogResult{}, err
	}
	r, where, closeRig, err := newRig(ctx, opts.Base)
	if err != nil {
		return BacklogResult{}, err
	}
	defer closeRig()
	res := BacklogResult{
		Redis: where, Running: opts.Running, GenerationTimeMs: ms(opts.GenerationTime),
		PollIntervalMs: ms(opts.PollInterval), RateLimit: opts.RateLimit, PollShare: opts.PollShare,
	}
	out := opts.Base.Out
	fmt.Fprintf(out, "backlog: %d running jobs (generation %s, polled every %s), then a backlog of new requests behind them; "+
		"CSM rate limit %d/s (burst %d, %.0f%% kept for polls), concurrency %d, Redis %s\n",
		opts.Running, opts.GenerationTime, opts.PollInterval, opts.RateLimit, 2*opts.RateLimit, 100*opts.PollShare, opts.Base.Concurrency, where)
	for i, b := range opts.Backlogs {
		startLoad := loadAverage()
		round, err := r.backlogRound(ctx, opts, i, b)
		round.Machine = machineAt(startLoad)
		if err != nil {
			return res, fmt.Errorf("backlog %d: %w", b, err)
		}
		round.write(out)
		res.Rounds = append(res.Rounds, round)
	}
	if first, last := res.compared(); first.DetectionP99ms > 0 {
		res.P99Ratio = last.DetectionP99ms / first.DetectionP99ms
	}
	fmt.Fprintln(out, res.FinalLine())
	return res, nil
}

func (r *rig) backlogRound(ctx context.Context, opts BacklogOptions, round, backlog int) (BacklogRound, error) {
	ns := r.namespace(fmt.Sprintf("backlog%d", round))
	defer r.cleanup(ns)
	lw, err := r.startWorker(ctx, ns, worker.PollPolicy{Interval: opts.PollInterval, MaxInterval: opts.PollInterval},
		limiterSpec{rate: opts.RateLimit, burst: 2 * opts.RateLimit, pollShare: opts.PollShare})
	if err != nil {
		return BacklogRound{}, err
	}
	defer func() { _ = lw.stop() }() // the error paths; the happy path checks it
	start := time.Now()
	r.calls.on.Store(true) // from before the first POST: it tells reads from polls
	defer r.calls.on.Store(false)

	running := csmsim.SessionConfig{Schema: csmsim.SchemaLegacy, GenerationTime: opts.GenerationTime}
	runCodes, runIDs := make([]string, opts.Running), make([]string, opts.Running)
	for i := range runCodes {
		runCodes[i] = fmt.Sprintf("BENCH_%s_RUN%d_%05d", r.run[:8], round, i)
		r.sim.AddSession(runCodes[i], running)
	}
	if err := enqueueAll(ctx, len(runCodes), func(ctx context.Context, i int) (err error) {
		runIDs[i], err = lw.enqueue(ctx, r, runCodes[i], i)
		return err
	}); err != nil {
		return BacklogRound{}, err
	}
	if err := r.awaitAccepted(ctx, runCodes, time.Minute+time.Duration(opts.Running)*time.Second/time.Duration(opts.RateLimit)*4); err != nil {
		return BacklogRound{}, fmt.Errorf("running jobs: %w", err)
	}

	queued := csmsim.SessionConfig{Schema: csmsim.SchemaLegacy, GenerationTime: time.Nanosecond}
	blCodes, blIDs := make([]string, backlog), make([]string, backlog)
	for i := range blCodes {
		blCodes[i] = fmt.Sprintf("BENCH_%s_BL%d_%06d", r.run[:8], round, i)
		r.sim.AddSession(blCodes[i], queued)
	}
	queuedAt := time.Now()
	if err := enqueueAll(ctx, backlog, func(ctx context.Context, i int) (err error) {
		blIDs[i], err = lw.enqueue(ctx, r, blCodes[i], opts.Running+i)
		return err
	}); err != nil {
		return BacklogRound{}, err
	}
	if err := r.awaitFinalsWithin(ctx, runIDs, 2*time.Minute+opts.GenerationTime); err != nil {
		return BacklogRound{}, fmt.Errorf("running jobs: %w", err)
	}
	p := BacklogRound{Backlog: backlog, Running: opts.Running, Finished: r.finals(runIDs), Seconds: time.Since(start).Seconds(), RateLimit: opts.RateLimit}
	p.Upstream = r.window(queuedAt, time.Now())
	p.BacklogAccepted, _ = r.accepted(blCodes)
	if p.BacklogQueuedAtEnd, err = r.queued(lw.queues.Previews); err != nil {
		return p, err
	}
	d := r.detectionsOf(runCodes, runIDs, func(int) time.Duration { return opts.GenerationTime })
	p.DetectionP50ms, p.DetectionP99ms, p.DetectionMaxms = ms(percentile(d, 50)), ms(percentile(d, 99)), ms(percentile(d, 100))
	if err := lw.stop(); err != nil {
		return p, fmt.Errorf("worker: %w", err)
	}
	p.BacklogAcceptedAll, p.BacklogPOSTs = r.accepted(blCodes)
	insp := asynq.NewInspectorFromRedisClient(r.rdb)
	for i, code := range blCodes {
		if r.sim.AcceptedPreviews(code) > 0 {
			continue
		}
		id := tasks.RequestPreview{JobID: blIDs[i], SessionCode: code}.TaskID()
		switch _, err := insp.GetTaskInfo(lw.queues.Previews, id); {
		case err == nil:
			p.BacklogLeft++
		case errors.Is(err, asynq.ErrTaskNotFound), errors.Is(err, asynq.ErrQueueNotFound):
			p.BacklogLost++
		default:
			return p, fmt.Errorf("request task of %s: %w", code, err)
		}
	}
	return p, nil
}

func (p BacklogRound) write(w io.Writer) {
	title := fmt.Sprintf("round %d queued behind %d running", p.Backlog, p.Running)
	if p.Backlog == 0 {
		title = fmt.Sprintf("round 0 queued (reference: %d running alone)", p.Running)
	}
	fmt.Fprintf(w, "%s: %d of %d running jobs finished (%.1f s)\n", title, p.Finished, p.Running, p.Seconds)
	fmt.Fprintf(w, "  detection   p50 %.0f ms, p99 %.0f ms, max %.0f ms (session final → final webhook received)\n",
		p.DetectionP50ms, p.DetectionP99ms, p.DetectionMaxms)
	fmt.Fprintf(w, "  backlog     %d accepted by CSM while they ran, %d request tasks still queued when the last was detected\n",
		p.BacklogAccepted, p.BacklogQueuedAtEnd)
	u := p.Upstream
	fmt.Fprintf(w, "  upstream    %.1f s from queueing the backlog: polls %.1f/s, request reads %.1f/s, POSTs %.1f/s of %d/s\n",
		u.Seconds, u.PollsPerSecond, u.ReadsPerSecond, u.POSTsPerSecond, p.RateLimit)
	if p.Machine != "" {
		fmt.Fprintf(w, "  machine     %s\n", p.Machine)
	}
	fmt.Fprintf(w, "  no loss     %d accepted (%d POSTs) + %d left queued after the worker stopped + %d lost = %d of %d\n",
		p.BacklogAcceptedAll, p.BacklogPOSTs, p.BacklogLeft, p.BacklogLost, p.BacklogAcceptedAll+p.BacklogLeft+p.BacklogLost, p.Backlog)
}

// detectionsOf is detections with each job's own generation time.
func (r *rig) detectionsOf(codes, jobIDs []string, generation func(i int) time.Duration) []time.Duration {
	out := make([]time.Duration, 0, len(codes))
	for i, code := range codes {
		call, ok := r.sim.LastPreview(code)
		f, got := r.rcv.Final(jobIDs[i])
		if !ok || !got {
			continue
		}
		out = append(out, f.At.Sub(call.At.Add(generation(i))))
	}
	return out
}
