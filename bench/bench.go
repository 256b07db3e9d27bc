// Package bench is the `previewd bench` program: it measures previewd's
// workers against the two figures that say whether they are fast enough.
// In one run, on one Redis and against one CSM simulator and one webhook
// receiver, it times three phases with the same job count and settings:
//
//  1. bare asynq: no-op tasks through one asynq.Server, the ceiling of any
//     pipeline built on asynq and this Redis;
//  2. the peer: the request → poll → webhook pipeline a competent team
//     would write directly on asynq, go-redis and net/http (peer.go);
//  3. previewd's real workers (worker.New with the real store, producer,
//     CSM client and webhook sender).
//
// Each phase reports jobs/s, Redis commands per job (INFO commandstats
// deltas; Redis 7 counts a script's inner calls too), Redis bytes per
// finished job (MEMORY USAGE summed over the keys the phase left), process
// CPU per job (getrusage over the phase), detection latency (from the
// simulator's session turning final to the receiver getting the final
// webhook) and polls per job (the simulator's own GET counts). The run ends
// with one line comparing previewd with the peer.
package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime/pprof"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/previewd/previewd/csmsim"
	"github.com/previewd/previewd/internal/receiver"
	"github.com/previewd/previewd/internal/roundtrips"
)

// Options configure a run. Zero values take the defaults.
type Options struct {
	// Jobs per phase; default 2,000, or 500 with Short.
	Jobs int
	// Short paces the run for CI: under two minutes in all.
	Short bool
	// RedisURL is the Redis to run on. Empty: an embedded redis-server on a
	// free loopback port (its commandstats count only the bench), or, when
	// there is no redis-server binary, FallbackRedisURL.
	RedisURL string
	// FallbackRedisURL is used when RedisURL is empty and redis-server is
	// not on PATH; default redis://127.0.0.1:6379/0.
	FallbackRedisURL string
	// PollInterval is every pipeline's poll interval; default 1s.
	PollInterval time.Duration
	// Concurrency is previewd's preview and webhook concurrency each; the
	// peer's and bare asynq's single server gets both together, so that
	// every phase has as many handler goroutines. Default 10.
	Concurrency int
	// CPUProfile, when set, receives a CPU profile of previewd's phase.
	CPUProfile string
	// Out receives the phase blocks and the final line.
	Out io.Writer
}

func (o *Options) defaults() error {
	if o.Jobs == 0 {
		o.Jobs = 2000
		if o.Short {
			o.Jobs = 500
		}
	}
	if o.Jobs < 1 || o.Jobs > 100000 {
		return fmt.Errorf("jobs must be between 1 and 100000, got %d", o.Jobs)
	}
	if o.PollInterval == 0 {
		o.PollInterval = time.Second
	}
	if o.PollInterval < 0 {
		return fmt.Errorf("poll interval must be positive, got %s", o.PollInterval)
	}
	if o.Concurrency == 0 {
		o.Concurrency = 10
	}
	if o.Concurrency < 1 {
		return fmt.Errorf("concurrency must be at least 1, got %d", o.Concurrency)
	}
	if o.FallbackRedisURL == "" {
		o.FallbackRedisURL = "redis://127.0.0.1:6379/0"
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	return nil
}

// checkInterval is how often every phase's asynq servers look for due and
// new tasks: previewd's own setting (ProcessIn has one-second granularity;
// asynq's default of 5 s would make a 1 s poll fire every 5 s), given to
// the peer and bare asynq too so that none waits longer than the others.
func (o Options) checkInterval() time.Duration { return min(time.Second, o.PollInterval/2) }

// Phase is what one phase measured.
type Phase struct {
	Name string `json:"name"`
	Jobs int    `json:"jobs"`
	// Finished counts jobs whose final webhook the receiver got (bare
	// asynq: tasks handled).
	Finished      int     `json:"finished"`
	Seconds       float64 `json:"seconds"`
	JobsPerSecond float64 `json:"jobs_per_second"`
	// RedisCommands counts every command Redis ran in the phase's window,
	// those scripts ran included; TopCommands names the most called.
	RedisCommands       int64    `json:"redis_commands"`
	RedisCommandsPerJob float64  `json:"redis_commands_per_job"`
	TopCommands         []string `json:"top_commands"`
	// RoundTrips counts the process's Redis round trips in the window (a
	// command, or a pipeline), the bench's own reads of progress included.
	RoundTrips       int64   `json:"round_trips"`
	RoundTripsPerJob float64 `json:"round_trips_per_job"`
	// Commands is every command's count in the window, for finding where
	// a phase's commands go (the JSON only).
	Commands map[string]int64 `json:"commands"`
	// RedisBytes is MEMORY USAGE summed over the RedisKeys the phase left.
	RedisBytes  int64   `json:"redis_bytes"`
	RedisKeys   int     `json:"redis_keys"`
	BytesPerJob float64 `json:"bytes_per_job"`
	// MemoryByKind is RedisBytes per kind of key (ids masked), the JSON only.
	MemoryByKind map[string]int64 `json:"memory_by_kind"`
	// CPUMillis is the process's CPU over the window: the workers, and
	// the simulator and receiver they talk to, which run in-process.
	CPUMillis       float64 `json:"cpu_ms"`
	CPUMillisPerJob float64 `json:"cpu_ms_per_job"`
	DetectionP50ms  float64 `json:"detection_p50_ms"`
	DetectionP99ms  float64 `json:"detection_p99_ms"`
	PollsPerJob     float64 `json:"polls_per_job"`
	PreviewPOSTs    int     `json:"preview_posts"`
}

// Result is a whole run.
type Result struct {
	Redis          string  `json:"redis"`
	Jobs           int     `json:"jobs"`
	PollIntervalMs float64 `json:"poll_interval_ms"`
	Concurrency    int     `json:"concurrency"`
	Bare           Phase   `json:"bare_asynq"`
	Peer           Phase   `json:"peer"`
	Ours           Phase   `json:"previewd"`
	// Ratio is previewd's jobs/s over the peer's.
	Ratio float64 `json:"ratio"`
}

// FinalLine is the line a run ends with.
func (r Result) FinalLine() string {
	return fmt.Sprintf("bench: ratio %.2f (ours %.1f jobs/s, peer %.1f jobs/s, bare asynq %.1f tasks/s), "+
		"%.1f Redis cmds/job (peer %.1f), %.0f bytes/job, %.2f CPU-ms/job (peer %.2f), detection p50 %.0f ms p99 %.0f ms",
		r.Ratio, r.Ours.JobsPerSecond, r.Peer.JobsPerSecond, r.Bare.JobsPerSecond,
		r.Ours.RedisCommandsPerJob, r.Peer.RedisCommandsPerJob, r.Ours.BytesPerJob,
		r.Ours.CPUMillisPerJob, r.Peer.CPUMillisPerJob, r.Ours.DetectionP50ms, r.Ours.DetectionP99ms)
}

// JSON writes the result as indented JSON.
func (r Result) JSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// rig is what the phases share: Redis, the simulator and the receiver.
type rig struct {
	opts     Options
	rdb      redis.UniversalClient
	trips    *roundtrips.Counter // rdb's round trips (BenchmarkRoundTrip: CPU follows them)
	run      string              // the run's token: namespaces and session codes
	sim      *csmsim.Server
	simURL   string
	apiKey   string
	rcv      *receiver.Receiver
	secret   string // the receiver's whsec_ secret
	hooksURL string
	// calls logs the simulator's requests by time, for the scenarios
	// (scenario.go); off unless a scenario turns it on.
	calls *callLog
}

// Run runs the three phases, writes a block per phase and the final line
// to opts.Out, and returns the figures.
func Run(ctx context.Context, opts Options) (Result, error) {
	if err := opts.defaults(); err != nil {
		return Result{}, err
	}
	r, where, closeRig, err := newRig(ctx, opts)
	if err != nil {
		return Result{}, err
	}
	defer closeRig()
	fmt.Fprintf(opts.Out, "bench: %d jobs per phase, poll interval %s, concurrency %d, Redis %s\n",
		opts.Jobs, opts.PollInterval, opts.Concurrency, where)

	res := Result{Redis: where, Jobs: opts.Jobs, PollIntervalMs: ms(opts.PollInterval), Concurrency: opts.Concurrency}
	if res.Bare, err = r.bare(ctx); err != nil {
		return res, fmt.Errorf("phase bare asynq: %w", err)
	}
	res.Bare.write(opts.Out, "1 bare asynq (no-op tasks)")
	if res.Peer, err = r.peer(ctx); err != nil {
		return res, fmt.Errorf("phase peer: %w", err)
	}
	res.Peer.write(opts.Out, "2 peer (request → poll → webhook on bare asynq + go-redis + net/http)")
	if res.Ours, err = r.ours(ctx); err != nil {
		return res, fmt.Errorf("phase previewd: %w", err)
	}
	res.Ours.write(opts.Out, "3 previewd (worker.New, the real store, CSM client and webhook sender)")
	if res.Peer.JobsPerSecond > 0 {
		res.Ratio = res.Ours.JobsPerSecond / res.Peer.JobsPerSecond
	}
	fmt.Fprintln(opts.Out, res.FinalLine())
	return res, nil
}

// newRig opens the run's Redis and starts the simulator and the receiver
// on loopback ports; close stops them. where describes the Redis.
func newRig(ctx context.Context, opts Options) (r *rig, where string, close func(), err error) {
	rdb, where, closeRedis, err := openRedis(ctx, opts)
	if err != nil {
		return nil, "", nil, err
	}
	var stops []func()
	close = func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}
	stops = append(stops, closeRedis)
	trips := &roundtrips.Counter{}
	rdb.AddHook(trips)
	r = &rig{opts: opts, rdb: rdb, trips: trips, run: randomToken(), apiKey: "bench-" + randomToken()}
	r.sim = csmsim.New(csmsim.Options{APIKey: r.apiKey})
	stops = append(stops, r.sim.Close)
	r.calls = newCallLog()
	var stopSim func()
	if r.simURL, stopSim, err = serveLoopback(r.calls.wrap(r.sim)); err != nil {
		close()
		return nil, "", nil, err
	}
	stops = append(stops, stopSim)
	if r.rcv, r.secret, err = receiver.New(); err != nil {
		close()
		return nil, "", nil, err
	}
	rcvURL, stopRcv, err := serveLoopback(r.rcv)
	if err != nil {
		close()
		return nil, "", nil, err
	}
	stops = append(stops, stopRcv)
	r.hooksURL = rcvURL + "/hooks"
	return r, where, close, nil
}

// openRedis returns the Redis of the run and a description of it.
func openRedis(ctx context.Context, opts Options) (redis.UniversalClient, string, func(), error) {
	url := opts.RedisURL
	var embedded *embeddedRedis
	if url == "" {
		var err error
		embedded, err = startEmbeddedRedis(ctx, "")
		switch {
		case errors.Is(err, exec.ErrNotFound):
			url = opts.FallbackRedisURL
		case err != nil:
			return nil, "", nil, err
		}
	}
	var rdb *redis.Client
	var where string
	if embedded != nil {
		rdb = redis.NewClient(&redis.Options{Addr: embedded.addr})
		where = "embedded redis-server at " + embedded.addr
	} else {
		o, err := redis.ParseURL(url)
		if err != nil {
			return nil, "", nil, fmt.Errorf("redis url: %w", err)
		}
		rdb = redis.NewClient(o)
		where = "at " + o.Addr + " (shared: its commandstats count other clients too)"
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := rdb.Ping(pctx).Err(); err != nil {
		_ = rdb.Close()
		if embedded != nil {
			embedded.close()
		}
		return nil, "", nil, fmt.Errorf("redis %s does not answer: %w", where, err)
	}
	return rdb, where, func() {
		_ = rdb.Close()
		if embedded != nil {
			embedded.close()
		}
	}, nil
}

// namespace is the phase's key prefix.
func (r *rig) namespace(phase string) string { return "bench-" + r.run[:8] + "-" + phase }

// limit bounds how long a phase may take before the run gives up.
func (r *rig) limit() time.Duration {
	return 2*time.Minute + time.Duration(r.opts.Jobs)*20*time.Millisecond
}

// awaitServers waits until n more asynq servers than before have announced
// themselves, so that a phase's window does not time their start-up.
func awaitServers(ctx context.Context, rdb redis.UniversalClient, before int64, n int) error {
	return waitFor(ctx, 10*time.Second, "asynq servers to start", func() bool {
		return serverCount(ctx, rdb) >= before+int64(n)
	}, func() string { return fmt.Sprintf("%d servers, want %d", serverCount(ctx, rdb), before+int64(n)) })
}

func serverCount(ctx context.Context, rdb redis.UniversalClient) int64 {
	n, _ := rdb.ZCard(ctx, "asynq:servers").Result()
	return n
}

// finish fills the figures derived from a window and the job count.
func (p *Phase) finish(w window) {
	p.Seconds = w.elapsed.Seconds()
	if p.Seconds > 0 {
		p.JobsPerSecond = float64(p.Finished) / p.Seconds
	}
	p.RedisCommands = w.cmds.total()
	p.RoundTrips = w.trips
	p.TopCommands = w.cmds.top(6)
	p.Commands = w.cmds
	p.CPUMillis = ms(w.cpu)
	if p.Jobs > 0 {
		p.RedisCommandsPerJob = float64(p.RedisCommands) / float64(p.Jobs)
		p.RoundTripsPerJob = float64(p.RoundTrips) / float64(p.Jobs)
		p.CPUMillisPerJob = p.CPUMillis / float64(p.Jobs)
	}
}

func (p *Phase) setMemory(use memoryUse) {
	p.RedisBytes, p.RedisKeys = use.bytes, use.keys
	p.MemoryByKind = use.byKind
	if p.Jobs > 0 {
		p.BytesPerJob = float64(use.bytes) / float64(p.Jobs)
	}
}

// write prints the phase's block.
func (p Phase) write(w io.Writer, title string) {
	unit := "jobs"
	if p.Name == "bare" {
		unit = "tasks"
	}
	fmt.Fprintf(w, "phase %s: %d %s, %d finished\n", title, p.Jobs, unit, p.Finished)
	fmt.Fprintf(w, "  throughput  %.1f %s/s (%.2f s)\n", p.JobsPerSecond, unit, p.Seconds)
	fmt.Fprintf(w, "  redis       %.1f cmds/job, script calls included (%v), in %.1f round trips/job\n", p.RedisCommandsPerJob, p.TopCommands, p.RoundTripsPerJob)
	fmt.Fprintf(w, "  memory      %.0f bytes/job (%d bytes in %d keys left)\n", p.BytesPerJob, p.RedisBytes, p.RedisKeys)
	fmt.Fprintf(w, "  cpu         %.2f ms/job (process: workers, simulator and receiver)\n", p.CPUMillisPerJob)
	if p.Name != "bare" {
		fmt.Fprintf(w, "  detection   p50 %.0f ms, p99 %.0f ms (session final → final webhook received)\n", p.DetectionP50ms, p.DetectionP99ms)
		fmt.Fprintf(w, "  polls       %.2f GET session per job (the read before the POST included)\n", p.PollsPerJob)
		fmt.Fprintf(w, "  upstream    %d preview POSTs accepted\n", p.PreviewPOSTs)
	}
}

// session is the simulator session of every bench job: legacy schema,
// turbo, nothing queued and no generation time (the simulator's zero means
// its 3 s default, so one nanosecond): final as soon as the POST lands.
var session = csmsim.SessionConfig{Schema: csmsim.SchemaLegacy, GenerationTime: time.Nanosecond}

// detections returns, per job, the time from its session turning final to
// its first final webhook's arrival; jobs without either are skipped.
func (r *rig) detections(codes, jobIDs []string) []time.Duration {
	return r.detectionsOf(codes, jobIDs, func(int) time.Duration { return session.QueueTime + session.GenerationTime })
}

// upstream fills detection, polls and POSTs from the simulator and receiver.
func (r *rig) upstream(p *Phase, codes, jobIDs []string) {
	d := r.detections(codes, jobIDs)
	p.DetectionP50ms, p.DetectionP99ms = ms(percentile(d, 50)), ms(percentile(d, 99))
	gets, posts := 0, 0
	for _, code := range codes {
		gets += r.sim.Requests(code, csmsim.EndpointGetSession)
		posts += r.sim.AcceptedPreviews(code)
	}
	p.PreviewPOSTs = posts
	if len(codes) > 0 {
		p.PollsPerJob = float64(gets) / float64(len(codes))
	}
}

// finals counts the jobs whose final webhook arrived.
func (r *rig) finals(jobIDs []string) int {
	n := 0
	for _, id := range jobIDs {
		if _, ok := r.rcv.Final(id); ok {
			n++
		}
	}
	return n
}

// awaitFinals waits until every job's final webhook arrived, and returns
// when the last one did.
func (r *rig) awaitFinals(ctx context.Context, jobIDs []string) (time.Time, error) {
	// Jobs finish roughly in order: each check pops the finished ones from
	// the front and stops at the first that is not, so that the bench's
	// own waiting costs next to no CPU in the window it measures.
	err := r.awaitFinalsWithin(ctx, jobIDs, r.limit())
	var last time.Time
	for _, id := range jobIDs {
		if f, ok := r.rcv.Final(id); ok && f.At.After(last) {
			last = f.At
		}
	}
	return last, err
}

// startProfile starts the CPU profile of previewd's phase, if asked for.
func (r *rig) startProfile() (func() error, error) {
	if r.opts.CPUProfile == "" {
		return func() error { return nil }, nil
	}
	f, err := os.Create(r.opts.CPUProfile)
	if err != nil {
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("cpu profile: %w", err)
	}
	return func() error {
		pprof.StopCPUProfile()
		return f.Close()
	}, nil
}

// enqueueAll runs enqueue(i) for every job on a few goroutines, as a busy
// API would, and returns the first error.
func enqueueAll(ctx context.Context, n int, enqueue func(ctx context.Context, i int) error) error {
	const producers = 4
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	next := make(chan int)
	errs := make(chan error, producers)
	for range producers {
		go func() {
			for i := range next {
				if err := enqueue(ctx, i); err != nil {
					errs <- fmt.Errorf("enqueue job %d: %w", i, err)
					cancel()
					return
				}
			}
			errs <- nil
		}()
	}
	var first error
feed:
	for i := range n {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	for range producers {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	if first == nil && ctx.Err() != nil {
		first = ctx.Err()
	}
	return first
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// serveLoopback serves h on a free loopback port until stop is called.
func serveLoopback(h http.Handler) (url string, stop func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, fmt.Errorf("listen on loopback: %w", err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return "http://" + ln.Addr().String(), func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}, nil
}
