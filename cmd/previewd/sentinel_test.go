package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/previewd/previewd/config"
	"github.com/previewd/previewd/csmsim"
	"github.com/previewd/previewd/internal/testutil"
	"github.com/previewd/previewd/store"
)

// TestFailoverOptionsKeepTheURL: with sentinels, the URL still gives the
// credentials, DB, TLS and client settings; only the address comes from
// the sentinels.
func TestFailoverOptionsKeepTheURL(t *testing.T) {
	tests := []struct {
		name  string
		url   string
		check func(t *testing.T, o *redis.FailoverOptions)
	}{
		{name: "password and db", url: "redis://:pw-1@ignored.invalid:6379/3", check: func(t *testing.T, o *redis.FailoverOptions) {
			if o.Password != "pw-1" || o.Username != "" || o.DB != 3 || o.TLSConfig != nil {
				t.Errorf("password %q user %q db %d tls %v", o.Password, o.Username, o.DB, o.TLSConfig)
			}
		}},
		{name: "acl user", url: "redis://app:pw-2@ignored.invalid/0", check: func(t *testing.T, o *redis.FailoverOptions) {
			if o.Username != "app" || o.Password != "pw-2" {
				t.Errorf("user %q password %q", o.Username, o.Password)
			}
			if o.SentinelUsername != "" || o.SentinelPassword != "" {
				t.Errorf("the primary's credentials were given to the sentinels")
			}
		}},
		{name: "tls", url: "rediss://redis.internal:6380/1", check: func(t *testing.T, o *redis.FailoverOptions) {
			if o.TLSConfig == nil || o.TLSConfig.ServerName != "redis.internal" {
				t.Errorf("tls %+v", o.TLSConfig)
			}
		}},
		{name: "query options", url: "redis://h:6379/0?dial_timeout=3s&read_timeout=4s&write_timeout=5s&pool_size=7&max_retries=9&min_retry_backoff=10ms&max_retry_backoff=2s&client_name=previewd",
			check: func(t *testing.T, o *redis.FailoverOptions) {
				got := fmt.Sprintf("%v %v %v %v %v %v %v %v", o.DialTimeout, o.ReadTimeout, o.WriteTimeout, o.PoolSize, o.MaxRetries, o.MinRetryBackoff, o.MaxRetryBackoff, o.ClientName)
				if want := "3s 4s 5s 7 9 10ms 2s previewd"; got != want {
					t.Errorf("got %s, want %s", got, want)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts, err := redis.ParseURL(tt.url)
			if err != nil {
				t.Fatal(err)
			}
			o := failoverOptions(opts, "mymaster", []string{"s1:26379", "s2:26379"})
			if o.MasterName != "mymaster" || strings.Join(o.SentinelAddrs, ",") != "s1:26379,s2:26379" {
				t.Errorf("master %q sentinels %q", o.MasterName, o.SentinelAddrs)
			}
			tt.check(t, o)
		})
	}
}

// sentinelSetup is a primary with one replica, both password-protected,
// watched by three sentinels.
type sentinelSetup struct {
	master           string
	password         string
	sentinelPassword string // the sentinels' own requirepass
	primary, replica *testutil.RedisServer
	sentinels        []*testutil.RedisServer
	sentinelClients  []*redis.SentinelClient
	sentinelAddrs    string
	// replicaClient reads the replica (the primary after the failover).
	replicaClient *redis.Client
}

func startSentinels(t *testing.T) *sentinelSetup {
	t.Helper()
	s := &sentinelSetup{master: "previewd-primary", password: "redis-pw-" + testutil.RandomHex(6),
		sentinelPassword: "sentinel-pw-" + testutil.RandomHex(6)}
	auth := []string{"--requirepass", s.password, "--masterauth", s.password, "--appendonly", "yes"}
	s.primary = testutil.StartRedisServer(t, auth...)
	s.replica = testutil.StartRedisServer(t, append(auth, "--replicaof", "127.0.0.1", fmt.Sprint(s.primary.Port))...)
	s.replicaClient = s.replica.Client()
	ctx := context.Background()
	// Sentinels find replicas in the primary's INFO, which they read at
	// start and then every 10 s: let the replica connect first.
	testutil.Eventually(t, 10*time.Second, "the replica to be in sync", func() bool {
		info, err := s.replicaClient.Info(ctx, "replication").Result()
		return err == nil && strings.Contains(info, "master_link_status:up")
	})
	var addrs []string
	for range 3 {
		// 2 s to call an instance down, not 1: on a loaded two-core
		// machine a busy primary missed 1 s and a second, spurious failover
		// promoted the restarted old primary with its stale data.
		sn := testutil.StartSentinel(t, s.master, s.primary.Addr(), testutil.SentinelOptions{
			AuthPass: s.password, RequirePass: s.sentinelPassword, DownAfter: 2 * time.Second})
		s.sentinels = append(s.sentinels, sn)
		addrs = append(addrs, sn.Addr())
	}
	s.sentinelAddrs = strings.Join(addrs, ",")
	for _, a := range addrs {
		c := redis.NewSentinelClient(&redis.Options{Addr: a, Password: s.sentinelPassword})
		t.Cleanup(func() { _ = c.Close() })
		s.sentinelClients = append(s.sentinelClients, c)
	}
	// A forced failover needs a replica the sentinels know; the sentinels
	// find each other through the primary's hello channel (every 2 s).
	for i, c := range s.sentinelClients {
		testutil.Eventually(t, 15*time.Second, "sentinel "+addrs[i]+" to know the replica and the other sentinels", func() bool {
			m, err := c.Master(ctx, s.master).Result()
			return err == nil && m["num-slaves"] == "1" && m["num-other-sentinels"] == "2"
		})
	}
	return s
}

// sentinelPatience is how long the test waits for the sentinels to act. A
// sentinel whose timer runs over 2 s late (a loaded CI machine running the
// race detector) enters TILT mode and changes nothing for 30 s: a fresh
// clone's CI once saw the old primary stay a primary for 30 s after its
// restart that way. Ninety seconds covers TILT and the 10 s INFO period
// after it; a healthy run takes a few seconds, so only a failure waits.
const sentinelPatience = 90 * time.Second

// agreedPrimary returns where every sentinel says the primary is, or ""
// while they disagree.
func (s *sentinelSetup) agreedPrimary(ctx context.Context) string {
	agreed := ""
	for i, c := range s.sentinelClients {
		a, err := c.GetMasterAddrByName(ctx, s.master).Result()
		if err != nil || len(a) != 2 || (i > 0 && a[0]+":"+a[1] != agreed) {
			return ""
		}
		agreed = a[0] + ":" + a[1]
	}
	return agreed
}

// TestSentinelFailoverDuringRun runs two previewd workers on a Sentinel
// deployment (one primary, one replica, three sentinels) with
// PREVIEWD_REDIS_MIN_REPLICAS=1, forces a failover while jobs are being
// requested and polled, kills the old primary with SIGKILL and restarts it
// on its data (the sentinels make it the new primary's replica). Judged
// from the simulator and the receiver: every job done, exactly one accepted
// preview POST per job, and every job's final webhook delivered.
func TestSentinelFailoverDuringRun(t *testing.T) {
	s := startSentinels(t)
	sim, simURL := testutil.NewSim(t, csmsim.Options{})
	rcv := testutil.NewReceiver(t)
	// The URL's host is never dialled: the sentinels say where the primary
	// is. Its password and DB are used.
	r := &testutil.Redis{URL: "redis://:" + s.password + "@primary-from-sentinels.invalid:6379/2", Namespace: "sentinel"}
	c := newCLI(t, r, simURL)
	c.env["PREVIEWD_REDIS_SENTINELS"] = s.sentinelAddrs
	c.env["PREVIEWD_REDIS_MASTER"] = s.master
	c.env["PREVIEWD_REDIS_SENTINEL_PASSWORD"] = s.sentinelPassword
	c.env["PREVIEWD_REDIS_MIN_REPLICAS"] = "1"
	c.env["PREVIEWD_LOG_LEVEL"] = "info"
	getenv := func(k string) string { return c.env[k] }

	out, _, code := c.run("config")
	if code != 0 || !strings.Contains(out, s.sentinelAddrs) || !strings.Contains(out, s.master) || strings.Contains(out, s.password) || strings.Contains(out, s.sentinelPassword) {
		t.Fatalf("config: exit %d, want the sentinels and master and no password:\n%s", code, out)
	}

	ctx, cancel := context.WithCancel(context.Background())
	var enqueuing sync.WaitGroup
	const workers = 2
	logs := make([]*syncBuffer, workers)
	exits := make(chan int, workers)
	for i := range logs {
		logs[i] = &syncBuffer{}
		go func() { exits <- run(ctx, []string{"worker"}, logs[i], logs[i], getenv) }()
	}
	allLogs := func() string {
		var b strings.Builder
		for i, l := range logs {
			fmt.Fprintf(&b, "--- worker %d ---\n%s", i, l.String())
		}
		return b.String()
	}
	defer func() {
		cancel()
		enqueuing.Wait()
		for range workers {
			select {
			case code := <-exits:
				if code != 0 {
					t.Errorf("a worker exited %d", code)
				}
			case <-time.After(30 * time.Second):
				t.Error("a worker did not stop")
			}
		}
		if t.Failed() {
			t.Logf("worker warnings and errors:\n%s", linesAbout(allLogs(), nil))
			for i, sn := range s.sentinels {
				t.Logf("sentinel %d log:\n%s", i, sn.Log())
			}
		}
		for _, l := range logs {
			if strings.Contains(l.String(), s.password) || strings.Contains(l.String(), s.sentinelPassword) {
				t.Error("a worker logged the Redis password")
			}
		}
	}()

	// A producer that retries, as the README asks of one: an enqueue that
	// fails during the failover is repeated, and the repeat is the same
	// job (its idempotency key is derived from the request).
	const jobs = 30
	codes := make([]string, jobs)
	ids := make([]string, jobs)
	enqueuing.Add(1)
	go func() {
		defer enqueuing.Done()
		for i := range jobs {
			codes[i] = fmt.Sprintf("SESSION_SENTINEL_%02d", i)
			sim.AddSession(codes[i], csmsim.SessionConfig{GenerationTime: 3 * time.Second})
			for try := 0; ctx.Err() == nil; try++ {
				var stdout, stderr bytes.Buffer
				if run(ctx, []string{"enqueue", "--session", codes[i], "--webhook-url", rcv.URL}, &stdout, &stderr, getenv) == 0 {
					var j store.Job
					if err := json.Unmarshal(stdout.Bytes(), &j); err == nil {
						ids[i] = j.ID
						break
					}
				}
				if try == 100 {
					t.Errorf("enqueue %s kept failing: %s", codes[i], stderr.String())
					return
				}
				time.Sleep(200 * time.Millisecond)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()

	// Fail over once some jobs are polling and others are still to be
	// requested; kill the old primary at once, as a crash during the
	// failover would.
	testutil.Eventually(t, 30*time.Second, "some accepted POSTs before the failover", func() bool {
		return sim.TotalAcceptedPreviews() >= 8
	})
	failoverAt := time.Now()
	if err := s.sentinelClients[0].Failover(ctx, s.master).Err(); err != nil {
		t.Fatalf("SENTINEL FAILOVER: %v", err)
	}
	s.primary.Kill9()
	testutil.Eventually(t, sentinelPatience, "every sentinel to name the replica primary", func() bool {
		return s.agreedPrimary(ctx) == s.replica.Addr()
	})
	switched := time.Since(failoverAt)
	// Back on its data, the old primary is made the new one's replica by
	// the sentinels, so MIN_REPLICAS=1 can be met again.
	s.primary.Restart()
	testutil.Eventually(t, sentinelPatience, "the old primary to replicate the new one", func() bool {
		info, err := s.replicaClient.Info(ctx, "replication").Result()
		return err == nil && strings.Contains(info, "role:master") && strings.Contains(info, "connected_slaves:1")
	})
	replicated := time.Since(failoverAt)
	enqueuing.Wait()
	if t.Failed() {
		return
	}

	cfg, err := config.FromEnv(getenv)
	if err != nil {
		t.Fatal(err)
	}
	rdb, err := openRedis(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	p := newProducer(cfg, rdb)
	final := make([]store.Job, jobs)
	for deadline := time.Now().Add(45 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		var stuck []string
		for i, id := range ids {
			if !final[i].Status.Final() {
				if j, err := p.Job(ctx, id); err == nil {
					final[i] = j
				}
			}
			if !final[i].Status.Final() {
				stuck = append(stuck, id)
			}
		}
		if len(stuck) == 0 {
			break
		}
		if time.Now().After(deadline) {
			for i, id := range ids {
				if !final[i].Status.Final() {
					raw, _ := json.Marshal(final[i])
					t.Errorf("job %s (%s) not final 45s after the failover; CSM accepted %d POSTs; the job: %s",
						id, codes[i], sim.AcceptedPreviews(codes[i]), raw)
				}
			}
			t.Logf("worker log lines of the stuck jobs, and warnings:\n%s", linesAbout(allLogs(), stuck))
			t.FailNow()
		}
	}
	finished := time.Since(failoverAt)
	for i, j := range final {
		if j.Status != store.StatusDone {
			t.Errorf("job %s (%s) ended %s: %+v", j.ID, codes[i], j.Status, j.Error)
		}
		if n := sim.AcceptedPreviews(codes[i]); n != 1 {
			t.Errorf("session %s: CSM accepted %d preview POSTs", codes[i], n)
		}
	}
	// Each job's final webhook reached its webhook_url.
	rcv.WaitFor(t, 30*time.Second, "every job's preview.done webhook", func(ds []testutil.Delivery) bool {
		got := map[string]bool{}
		for _, d := range ds {
			var ev struct {
				Type string    `json:"type"`
				Data store.Job `json:"data"`
			}
			if json.Unmarshal(d.Body, &ev) == nil && ev.Type == "preview.done" {
				got[ev.Data.ID] = true
			}
		}
		for _, id := range ids {
			if !got[id] {
				return false
			}
		}
		return true
	})
	if a := s.agreedPrimary(ctx); a != s.replica.Addr() {
		t.Errorf("the sentinels name %q primary at the end, not the replica promoted by the one failover: a second failover happened (sentinel logs follow)", a)
	}
	var warns, errs int
	for line := range strings.SplitSeq(allLogs(), "\n") {
		warns += strings.Count(line, `"level":"warn"`)
		errs += strings.Count(line, `"level":"error"`)
	}
	t.Logf("workers logged %d warnings and %d errors", warns, errs)
	if testing.Verbose() {
		t.Logf("their warnings and errors:\n%s", linesAbout(allLogs(), nil))
	}
	t.Logf("failover: sentinels named the new primary %.1fs after SENTINEL FAILOVER; it had a replica again after %.1fs; all %d jobs done %.1fs after it",
		switched.Seconds(), replicated.Seconds(), jobs, finished.Seconds())
}

// TestMinReplicasHoldsThePOST: with PREVIEWD_REDIS_MIN_REPLICAS=1 and a
// primary without replicas, the worker reads the session but never sends
// the billed POST; once a replica connects, the job is requested once and
// finishes.
func TestMinReplicasHoldsThePOST(t *testing.T) {
	t.Parallel()
	primary := testutil.StartRedisServer(t)
	sim, simURL := testutil.NewSim(t, csmsim.Options{})
	code := "SESSION_MINREPLICAS_" + testutil.RandomHex(4)
	sim.AddSession(code, csmsim.SessionConfig{GenerationTime: time.Second})
	c := newCLI(t, &testutil.Redis{URL: primary.URL(), Namespace: "minreplicas"}, simURL)
	c.env["PREVIEWD_REDIS_MIN_REPLICAS"] = "1"
	c.env["PREVIEWD_REDIS_REPLICA_TIMEOUT"] = "100ms"
	getenv := func(k string) string { return c.env[k] }
	ctx, cancel := context.WithCancel(context.Background())
	var log syncBuffer
	exited := make(chan int, 1)
	go func() { exited <- run(ctx, []string{"worker"}, &log, &log, getenv) }()
	defer func() {
		cancel()
		if code := <-exited; code != 0 {
			t.Errorf("worker exited %d:\n%s", code, log.String())
		}
	}()
	out, errOut, exit := c.run("enqueue", "--session", code)
	if exit != 0 {
		t.Fatalf("enqueue: %s", errOut)
	}
	var job store.Job
	_ = json.Unmarshal([]byte(out), &job)

	// Two reads of the session: the first attempt ended without a POST
	// and a second one began.
	testutil.Eventually(t, 30*time.Second, "a second request attempt", func() bool {
		return sim.Requests(code, csmsim.EndpointGetSession) >= 2
	})
	if n := sim.AcceptedPreviews(code); n != 0 {
		t.Fatalf("CSM accepted %d preview POSTs though no replica could acknowledge the intent", n)
	}
	if !strings.Contains(log.String(), "fewer replicas are connected than PREVIEWD_REDIS_MIN_REPLICAS") {
		t.Errorf("no start-up warning about the missing replica:\n%s", log.String())
	}

	testutil.StartRedisServer(t, "--replicaof", "127.0.0.1", fmt.Sprint(primary.Port))
	cfg, err := config.FromEnv(getenv)
	if err != nil {
		t.Fatal(err)
	}
	p := newProducer(cfg, primary.Client())
	var final store.Job
	testutil.Eventually(t, 45*time.Second, "the job to finish once a replica acknowledges", func() bool {
		j, err := p.Job(ctx, job.ID)
		final = j
		return err == nil && j.Status.Final()
	})
	if final.Status != store.StatusDone || sim.AcceptedPreviews(code) != 1 {
		t.Fatalf("job ended %s with %d accepted POSTs:\n%s", final.Status, sim.AcceptedPreviews(code), log.String())
	}
}

// linesAbout returns the log lines that mention one of ids or are not at
// info level.
func linesAbout(log string, ids []string) string {
	var b strings.Builder
	for line := range strings.SplitSeq(log, "\n") {
		keep := !strings.Contains(line, `"level":"info"`)
		for _, id := range ids {
			keep = keep || strings.Contains(line, id)
		}
		if keep {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}
