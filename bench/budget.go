package bench

import (
	"context"
	"fmt"
	"io"
	"math"
	"time"

	"github.com/previewd/previewd/csmsim"
	"github.com/previewd/previewd/worker"
)

// BudgetOptions configure the budget scenario (RunBudget). Zero values
// take the defaults.
type BudgetOptions struct {
	// Base gives the Redis, the concurrency, Short and Out; its job count
	// and poll interval are not used.
	Base Options
	// Jobs is how many HD previews run at once in the steady state the
	// fill reaches (they arrive at Jobs per mean duration); default 5,000,
	// or 200 with Short.
	Jobs int
	// RateLimit is the CSM rate limit before compression, in calls a
	// second, burst twice that (PREVIEWD_CSM_RATE_BURST's default
	// proportion); default 10.
	RateLimit int
	// Compress is the time compression: every duration of the scenario
	// (CSM's expected preview times, the previews' generation times, the
	// 5 min safety-net poll interval) is divided by it and the rate limit
	// multiplied by it, so that every share of the budget is what it would
	// be in real time. Default 60, or 300 with Short.
	Compress float64
	// Burst is how many new requests are queued at once while Jobs run,
	// to see them progress at their share; default the requests' share of
	// the compressed rate for 20 s, or Jobs/2 with Short.
	Burst int
	// PollShare is the share of the rate kept for polls; default
	// DefaultPollShare.
	PollShare float64
	// Slack is how late a poll may come after its scheduled time: asynq's
	// check for due tasks (every 0.5 s here), picking the task up, the
	// rate limiter's turn. It is real time, not compressed. Default 1 s.
	Slack time.Duration
}

// The uncompressed scenario: HD previews taking 60 to 120 min (CSM's
// expected 90 min on average), polled with pushes on (the safety net every
// PREVIEWD_PUSH_POLL_INTERVAL, 5 min by default) but no push ever arriving,
// so every detection is the schedule's.
const (
	budgetMinDuration = 60 * time.Minute
	budgetMaxDuration = 120 * time.Minute
	budgetSafetyNet   = 5 * time.Minute
	budgetBurstFor    = 10 * time.Second // compressed: the default Burst's length at the requests' share
)

func (o *BudgetOptions) defaults() error {
	if err := o.Base.defaults(); err != nil {
		return err
	}
	short := o.Base.Short
	if o.Jobs == 0 {
		o.Jobs = 5000
		if short {
			o.Jobs = 200
		}
	}
	if o.RateLimit == 0 {
		o.RateLimit = 10
	}
	if o.Compress == 0 {
		o.Compress = 60
		if short {
			o.Compress = 300
		}
	}
	if o.PollShare == 0 {
		o.PollShare = DefaultPollShare
	}
	if o.Slack == 0 {
		o.Slack = time.Second
	}
	switch {
	case o.Jobs < 1 || o.Jobs > 100000:
		return fmt.Errorf("jobs must be between 1 and 100000, got %d", o.Jobs)
	case o.RateLimit < 1:
		return fmt.Errorf("rate limit must be at least 1, got %d", o.RateLimit)
	case o.Compress < 1 || o.Compress > 300:
		return fmt.Errorf("compression must be between 1 and 300 (the safety-net poll stays at least 1 s), got %v", o.Compress)
	case o.PollShare <= 0 || o.PollShare >= 1:
		return fmt.Errorf("poll share must be between 0 and 1, got %v", o.PollShare)
	case o.Burst < 0:
		return fmt.Errorf("burst must be positive, got %d", o.Burst)
	}
	if o.Burst == 0 {
		o.Burst = int(o.requestShare() * budgetBurstFor.Seconds())
		if short {
			o.Burst = max(o.Jobs/2, 1)
		}
	}
	return nil
}

// rate is the compressed rate limit, calls a second.
func (o BudgetOptions) rate() int { return int(math.Round(float64(o.RateLimit) * o.Compress)) }

// requestShare is what new requests may use of the compressed rate.
func (o BudgetOptions) requestShare() float64 { return float64(o.rate()) * (1 - o.PollShare) }

// scale compresses a real duration.
func (o BudgetOptions) scale(d time.Duration) time.Duration {
	return time.Duration(float64(d) / o.Compress)
}

// BudgetResult is a whole budget run. Durations and rates are as run
// (compressed) unless their name says uncompressed.
type BudgetResult struct {
	Redis       string  `json:"redis"`
	Jobs        int     `json:"jobs"`
	RateLimit   int     `json:"rate_limit"`
	Compress    float64 `json:"compress"`
	Rate        int     `json:"rate_compressed"`
	PollShare   float64 `json:"poll_share"`
	SafetyNetMs float64 `json:"safety_net_ms"`
	SlackMs     float64 `json:"slack_ms"`
	// HD counts the HD previews (the fill and those arriving during the
	// burst), Burst the new requests queued at once; Finished those whose
	// final webhook arrived, POSTs the previews CSM accepted.
	HD    int `json:"hd_jobs"`
	Burst int `json:"burst_jobs"`
	// BurstAccepted counts the burst's jobs accepted by the end of the
	// burst window: all of them, unless the window hit its limit.
	BurstAccepted int `json:"burst_accepted"`
	Finished      int `json:"finished"`
	POSTs         int `json:"posts"`
	// ActiveAtBurst is how many HD previews were running (accepted, not
	// yet final at the simulator) when the burst was queued.
	ActiveAtBurst int `json:"active_at_burst"`
	// WithinSchedule counts the jobs whose final webhook arrived and whose
	// detecting poll (the first after the end) came by the last poll
	// before the end plus the wait the schedule gave it, plus Slack;
	// WorstLateMs is the most a detecting poll came after that (negative:
	// all early).
	WithinSchedule int     `json:"within_schedule"`
	WorstLateMs    float64 `json:"worst_late_ms"`
	// WebhookLag is from the detecting poll to the final webhook's arrival.
	WebhookLagP50ms float64 `json:"webhook_lag_p50_ms"`
	WebhookLagP99ms float64 `json:"webhook_lag_p99_ms"`
	WebhookLagMaxms float64 `json:"webhook_lag_max_ms"`
	// PollDetection is from the session's end to the detecting poll: the
	// schedule's part of the detection, the part time compression shrinks.
	PollDetectionP50ms float64 `json:"poll_detection_p50_ms"`
	PollDetectionP99ms float64 `json:"poll_detection_p99_ms"`
	PollDetectionMaxms float64 `json:"poll_detection_max_ms"`
	DetectionP50ms     float64 `json:"detection_p50_ms"`
	DetectionP99ms     float64 `json:"detection_p99_ms"`
	DetectionMaxms     float64 `json:"detection_max_ms"`
	PollsPerHDJob      float64 `json:"polls_per_hd_job"`
	// Per-second figures over the fill, the burst (until every burst job
	// was accepted) and the whole run, as measured at the simulator.
	Fill  BudgetWindow `json:"fill"`
	Surge BudgetWindow `json:"burst"`
	Whole BudgetWindow `json:"whole"`
	// Turns granted by the rate limiter: poll-class (polls and the read
	// before each POST) and request-class (the POSTs).
	PollTurns    int64   `json:"poll_turns"`
	RequestTurns int64   `json:"request_turns"`
	Seconds      float64 `json:"seconds"`
	// Machine is the load average at the start and the end.
	Machine string `json:"machine"`
}

// BudgetWindow is what the simulator saw in one window.
type BudgetWindow struct {
	Seconds        float64 `json:"seconds"`
	PollsPerSecond float64 `json:"polls_per_second"`
	ReadsPerSecond float64 `json:"reads_per_second"`
	POSTsPerSecond float64 `json:"posts_per_second"`
}

func (r *rig) window(from, to time.Time) BudgetWindow {
	reads, polls, posts := r.calls.count(from, to)
	s := to.Sub(from).Seconds()
	if s <= 0 {
		return BudgetWindow{}
	}
	return BudgetWindow{Seconds: s, PollsPerSecond: float64(polls) / s, ReadsPerSecond: float64(reads) / s, POSTsPerSecond: float64(posts) / s}
}

// FinalLine is the line a budget run ends with.
func (b BudgetResult) FinalLine() string {
	return fmt.Sprintf("budget: %d active HD previews at %d req/s (time ×%g): %d of %d jobs detected within schedule (worst poll %+.0f ms past it, slack %.0f ms; "+
		"detection p99 %.0f ms, webhook p99 %.0f ms after the poll), polls %.2f/s uncompressed, requests %.1f/s in the burst (share %.1f/s), %d of %d finished",
		b.ActiveAtBurst, b.RateLimit, b.Compress, b.WithinSchedule, b.HD+b.Burst, b.WorstLateMs, b.SlackMs, b.DetectionP99ms, b.WebhookLagP99ms,
		b.Fill.PollsPerSecond/b.Compress, b.Surge.POSTsPerSecond, float64(b.Rate)*(1-b.PollShare), b.Finished, b.HD+b.Burst)
}

// JSON writes the result as indented JSON.
func (b BudgetResult) JSON(w io.Writer) error { return writeJSON(w, b) }

// budgetJob is one job of the scenario.
type budgetJob struct {
	code, id   string
	mesh       string
	generation time.Duration
}

// RunBudget shows whether polling fits the CSM budget with many previews
// running: previewd's real worker, with the CSM rate limit and the polls'
// share as cmd/previewd wires them and pushes on (the expected-duration
// schedule with its safety net) but no push ever sent, gets HD previews
// arriving at the pace that keeps Jobs running (Jobs over their mean
// duration) for the longest duration, by when as many end as arrive and
// Jobs run at once with their ages spread as in a steady state; then Burst new requests are queued at once
// (turbo previews) while arrivals go on, until every one of them was
// accepted; then arrivals stop and the run waits for every final webhook.
// Everything goes through the real path: the producer API, the request
// task's POST, the poll chain, the webhook.
//
// Time is compressed by Compress (see BudgetOptions), so that hours of HD
// previews take minutes; what is checked per job is that its final webhook
// came by the last poll before its end plus the wait the schedule then
// gave (the safety net, or the expected-duration wait when longer), plus
// Slack: no poll was held back by the budget.
func RunBudget(ctx context.Context, opts BudgetOptions) (BudgetResult, error) {
	if err := opts.defaults(); err != nil {
		return BudgetResult{}, err
	}
	r, where, closeRig, err := newRig(ctx, opts.Base)
	if err != nil {
		return BudgetResult{}, err
	}
	defer closeRig()
	out := opts.Base.Out
	safety := opts.scale(budgetSafetyNet)
	res := BudgetResult{
		Redis: where, Jobs: opts.Jobs, RateLimit: opts.RateLimit, Compress: opts.Compress, Rate: opts.rate(),
		PollShare: opts.PollShare, SafetyNetMs: ms(safety), SlackMs: ms(opts.Slack), Burst: opts.Burst,
	}
	mean := opts.scale((budgetMinDuration + budgetMaxDuration) / 2)
	fmt.Fprintf(out, "budget: %d HD previews running at once, CSM rate limit %d/s (burst %d, %.0f%% kept for polls), pushes on but none sent, concurrency %d, Redis %s\n",
		opts.Jobs, opts.RateLimit, 2*opts.RateLimit, 100*opts.PollShare, opts.Base.Concurrency, where)
	fmt.Fprintf(out, "  compressed  time ×%g: HD previews of %s–%s take %s–%s (CSM's expected 90 min: %s), turbo's 1 min %s, safety-net poll %s → %s; "+
		"rate %d/s → %d/s (burst %d); not compressed: the slack of %s, asynq's 1 s scheduling granularity\n",
		opts.Compress, budgetMinDuration, budgetMaxDuration, opts.scale(budgetMinDuration), opts.scale(budgetMaxDuration),
		opts.scale(worker.ExpectedDuration("hd")), opts.scale(worker.ExpectedDuration("turbo")), budgetSafetyNet, safety,
		opts.RateLimit, opts.rate(), 2*opts.rate(), opts.Slack)

	ns := r.namespace("budget")
	defer r.cleanup(ns)
	expected := func(mesh string) time.Duration { return opts.scale(worker.ExpectedDuration(mesh)) }
	lw, err := r.startWorker(ctx, ns, worker.PollPolicy{
		Interval: time.Second, MaxInterval: time.Minute, PushInterval: safety, Expected: expected,
	}, limiterSpec{rate: opts.rate(), burst: 2 * opts.rate(), pollShare: opts.PollShare})
	if err != nil {
		return res, err
	}
	defer func() { _ = lw.stop() }() // the error paths; the happy path checks it

	r.calls.on.Store(true)
	defer r.calls.on.Store(false)
	startLoad := loadAverage()
	var jobs []budgetJob
	hd := func(i int) budgetJob {
		// Durations spread evenly over the range, in no relation to the
		// arrival order (the golden ratio's multiples modulo 1).
		u := math.Mod(float64(i)*0.6180339887498949, 1)
		span := float64(budgetMaxDuration - budgetMinDuration)
		return budgetJob{
			code: fmt.Sprintf("BENCH_%s_HD_%06d", r.run[:8], i), mesh: "hd",
			generation: opts.scale(budgetMinDuration + time.Duration(u*span)),
		}
	}
	add := func(j budgetJob) error {
		r.sim.AddSession(j.code, csmsim.SessionConfig{Schema: csmsim.SchemaLegacy, PreviewMesh: j.mesh, GenerationTime: j.generation})
		id, err := lw.enqueue(ctx, r, j.code, len(jobs))
		if err != nil {
			return fmt.Errorf("enqueue %s: %w", j.code, err)
		}
		j.id = id
		jobs = append(jobs, j)
		return nil
	}

	// The fill: arrivals at Jobs per mean duration, for the longest
	// duration, by when as many end as arrive: Jobs run at once.
	start := time.Now()
	every := mean / time.Duration(opts.Jobs)
	fillFor := opts.scale(budgetMaxDuration)
	arrive := func(until func() bool) error {
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for !until() {
			for due := int(time.Since(start)/every) + 1; res.HD < due && !until(); res.HD++ {
				if err := add(hd(res.HD)); err != nil {
					return err
				}
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-tick.C:
			}
		}
		return nil
	}
	if err := arrive(func() bool { return time.Since(start) >= fillFor }); err != nil {
		return res, err
	}
	burstAt := time.Now()
	res.ActiveAtBurst = r.activeAt(jobs, burstAt)

	// The burst: new requests all at once, arrivals going on meanwhile.
	burst := make([]string, 0, opts.Burst)
	for i := range opts.Burst {
		j := budgetJob{code: fmt.Sprintf("BENCH_%s_NEW_%06d", r.run[:8], i), mesh: "turbo", generation: opts.scale(worker.ExpectedDuration("turbo"))}
		if err := add(j); err != nil {
			return res, err
		}
		burst = append(burst, j.code)
	}
	limit := time.Minute + time.Duration(float64(opts.Burst)/opts.requestShare()*4*float64(time.Second))
	deadline := time.Now().Add(limit)
	var burstDone time.Time
	pending := burst // popped from the front as they are accepted, roughly in order
	if err := arrive(func() bool {
		for len(pending) > 0 && r.sim.AcceptedPreviews(pending[0]) > 0 {
			pending = pending[1:]
		}
		if len(pending) == 0 {
			burstDone = time.Now()
			return true
		}
		return time.Now().After(deadline)
	}); err != nil {
		return res, err
	}
	if burstDone.IsZero() {
		// Requests did not get through in time: that is the figure, and
		// the drain (no more arrivals) lets the rest through.
		burstDone = time.Now()
	}
	res.BurstAccepted, _ = r.accepted(burst)

	// The drain.
	ids := make([]string, len(jobs))
	for i, j := range jobs {
		ids[i] = j.id
	}
	if err := r.awaitFinalsWithin(ctx, ids, time.Minute+2*opts.scale(budgetMaxDuration)); err != nil {
		return res, err
	}
	end := time.Now()
	res.Seconds = end.Sub(start).Seconds()
	res.PollTurns, res.RequestTurns = lw.turns[0].Load(), lw.turns[1].Load()
	if err := lw.stop(); err != nil {
		return res, fmt.Errorf("worker: %w", err)
	}
	r.calls.on.Store(false)
	res.Fill, res.Surge, res.Whole = r.window(start, burstAt), r.window(burstAt, burstDone), r.window(start, end)
	r.judge(&res, jobs, safety, expected, opts.Slack)
	res.Machine = machineAt(startLoad)
	res.write(out)
	fmt.Fprintln(out, res.FinalLine())
	return res, nil
}

// stepAtEnd is a job's poll chain at its session's end.
type stepAtEnd struct {
	polls  int           // polls after the POST
	last   time.Time     // the last poll before the end, or the acceptance
	wait   time.Duration // the longest wait the schedule could give at last
	detect time.Time     // the first poll at or after the end; zero if none
}

// scheduleOf finds the step of a job's poll chain that was waiting at its
// end, from the session's GETs (the read before the POST, then the polls):
// the last poll before the end, or the acceptance when none came yet, and
// the wait it was given. After the acceptance that is the safety net; after
// a poll, the longer of the safety net and the expected-duration wait, as
// worker/poll.go computes it (half the time left to the expected end e,
// a quarter of the overrun past it). The safety net is taken at its
// jitter's top, 10% over.
func scheduleOf(accepted, end time.Time, gets []time.Time, safety, e time.Duration) stepAtEnd {
	st := stepAtEnd{last: accepted}
	for _, g := range gets {
		if g.Before(accepted) {
			continue // the read before the POST
		}
		st.polls++
		if g.Before(end) {
			st.last = g
		} else if st.detect.IsZero() {
			st.detect = g
		}
	}
	st.wait = time.Duration(1.1 * float64(safety))
	if st.last.After(accepted) && e > 0 {
		var w time.Duration
		if elapsed := st.last.Sub(accepted); elapsed < e {
			w = (e - elapsed) / 2
		} else {
			w = (elapsed - e) / 4
		}
		st.wait = max(st.wait, w)
	}
	return st
}

// activeAt counts the jobs accepted by CSM and not yet final there at t.
func (r *rig) activeAt(jobs []budgetJob, t time.Time) int {
	n := 0
	for _, j := range jobs {
		if call, ok := r.sim.LastPreview(j.code); ok && !call.At.After(t) && call.At.Add(j.generation).After(t) {
			n++
		}
	}
	return n
}

// judge checks every job against its schedule and fills the figures.
//
// A job's schedule at its end is the poll chain's step that was waiting
// then: the last poll before the end (or the acceptance, when none came
// yet) and the wait it was given: the safety net (at most 10% over, its
// jitter) or the expected-duration wait when longer, as worker/poll.go
// computes it: half the time left to the expected end, a quarter of the
// overrun past it. The job is within its schedule when its final webhook
// came by then plus the slack.
func (r *rig) judge(res *BudgetResult, jobs []budgetJob, safety time.Duration, expected func(string) time.Duration, slack time.Duration) {
	res.WorstLateMs = math.Inf(-1)
	var detections, lags, polled []time.Duration
	hdPolls := 0
	for _, j := range jobs {
		call, ok := r.sim.LastPreview(j.code)
		f, got := r.rcv.Final(j.id)
		if ok {
			res.POSTs += r.sim.AcceptedPreviews(j.code)
		}
		if !ok || !got {
			continue
		}
		res.Finished++
		end := call.At.Add(j.generation)
		detections = append(detections, f.At.Sub(end))
		st := scheduleOf(call.At, end, r.calls.getsOf(j.code), safety, expected(j.mesh))
		if j.mesh == "hd" {
			hdPolls += st.polls
		}
		if st.detect.IsZero() {
			continue // final without a poll after the end: not by the schedule
		}
		detect, last, wait := st.detect, st.last, st.wait
		lags = append(lags, f.At.Sub(detect))
		polled = append(polled, detect.Sub(end))
		late := detect.Sub(last.Add(wait))
		if late <= slack {
			res.WithinSchedule++
		}
		res.WorstLateMs = max(res.WorstLateMs, ms(late))
	}
	if math.IsInf(res.WorstLateMs, -1) {
		res.WorstLateMs = 0
	}
	res.DetectionP50ms, res.DetectionP99ms, res.DetectionMaxms = ms(percentile(detections, 50)), ms(percentile(detections, 99)), ms(percentile(detections, 100))
	res.PollDetectionP50ms, res.PollDetectionP99ms, res.PollDetectionMaxms = ms(percentile(polled, 50)), ms(percentile(polled, 99)), ms(percentile(polled, 100))
	res.WebhookLagP50ms, res.WebhookLagP99ms, res.WebhookLagMaxms = ms(percentile(lags, 50)), ms(percentile(lags, 99)), ms(percentile(lags, 100))
	if res.HD > 0 {
		res.PollsPerHDJob = float64(hdPolls) / float64(res.HD)
	}
}

func (b BudgetResult) write(w io.Writer) {
	share := float64(b.Rate) * (1 - b.PollShare)
	k := b.Compress
	fmt.Fprintf(w, "  jobs        %d HD previews (arriving at %d per mean duration, through the fill and the burst) and %d new requests in the burst: %d finished, %d preview POSTs accepted (%.1f s)\n",
		b.HD, b.Jobs, b.Burst, b.Finished, b.POSTs, b.Seconds)
	fmt.Fprintf(w, "  active      %d HD previews running when the burst was queued; %d of its %d requests accepted in the burst window\n", b.ActiveAtBurst, b.BurstAccepted, b.Burst)
	for _, x := range []struct {
		name string
		w    BudgetWindow
	}{{"fill", b.Fill}, {"burst", b.Surge}, {"whole run", b.Whole}} {
		fmt.Fprintf(w, "  %-11s %.1f s: polls %.1f/s, request reads %.1f/s, POSTs %.1f/s = %.0f%% of the rate "+
			"(uncompressed: polls %.2f/s, reads %.2f/s, POSTs %.2f/s of %d/s)\n",
			x.name, x.w.Seconds, x.w.PollsPerSecond, x.w.ReadsPerSecond, x.w.POSTsPerSecond,
			100*(x.w.PollsPerSecond+x.w.ReadsPerSecond+x.w.POSTsPerSecond)/float64(b.Rate),
			x.w.PollsPerSecond/k, x.w.ReadsPerSecond/k, x.w.POSTsPerSecond/k, b.RateLimit)
	}
	fmt.Fprintf(w, "  requests    %.1f POSTs/s in the burst, the requests' share being %.1f/s (%.0f%%); %.1f/s over the fill's arrivals\n",
		b.Surge.POSTsPerSecond, share, 100*b.Surge.POSTsPerSecond/share, b.Fill.POSTsPerSecond)
	fmt.Fprintf(w, "  limiter     %d poll-class turns (polls), %d request-class turns (the read before each POST, and the POST)\n", b.PollTurns, b.RequestTurns)
	fmt.Fprintf(w, "  schedule    %d of %d detected within schedule (the detecting poll by the last poll before the end + its scheduled wait + slack %.0f ms); worst %+.0f ms past its scheduled time\n",
		b.WithinSchedule, b.HD+b.Burst, b.SlackMs, b.WorstLateMs)
	fmt.Fprintf(w, "  webhook     p50 %.0f ms, p99 %.0f ms, max %.0f ms from the detecting poll to the final webhook (one receiver: beyond its %d delivery slots a webhook is snoozed 1–3 s)\n",
		b.WebhookLagP50ms, b.WebhookLagP99ms, b.WebhookLagMaxms, 4)
	fmt.Fprintf(w, "  detection   final webhook p50 %.0f ms, p99 %.0f ms, max %.0f ms after the session's end; its poll p50 %.0f ms, p99 %.0f ms, max %.0f ms "+
		"(uncompressed, the poll: p50 %.1f min, p99 %.1f min, max %.1f min)\n",
		b.DetectionP50ms, b.DetectionP99ms, b.DetectionMaxms, b.PollDetectionP50ms, b.PollDetectionP99ms, b.PollDetectionMaxms,
		b.PollDetectionP50ms*k/60000, b.PollDetectionP99ms*k/60000, b.PollDetectionMaxms*k/60000)
	fmt.Fprintf(w, "  polls       %.2f GET session per HD preview after its POST\n", b.PollsPerHDJob)
	if b.Machine != "" {
		fmt.Fprintf(w, "  machine     %s\n", b.Machine)
	}
}
