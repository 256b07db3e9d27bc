package worker_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/previewd/previewd/csm"
	"github.com/previewd/previewd/csmsim"
	"github.com/previewd/previewd/internal/testutil"
	"github.com/previewd/previewd/store"
	"github.com/previewd/previewd/tasks"
	"github.com/previewd/previewd/webhook"
	"github.com/previewd/previewd/worker"
)

// holdingReceiver holds every request it gets until the test ends (or the
// client gives up), and records how many it held at once: the receivers'
// own count of what the workers spent on them.
type holdingReceiver struct {
	mu             sync.Mutex
	inFlight, peak int
	hits           int
	hosts          map[string]bool // Host headers seen
	release        chan struct{}
}

func newHoldingReceiver(t *testing.T) *holdingReceiver {
	t.Helper()
	hr := &holdingReceiver{hosts: map[string]bool{}, release: make(chan struct{})}
	// Runs before the servers' Close (cleanups run last-in first-out), so
	// Close does not wait for requests held to the end.
	t.Cleanup(func() { close(hr.release) })
	return hr
}

// listen serves hr on ip:port (port 0 for any); every address in
// 127.0.0.0/8 is loopback on Linux.
func (hr *holdingReceiver) listen(t *testing.T, ip string, port int) int {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
	if err != nil {
		t.Fatalf("listen on %s: %v", ip, err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(hr.serve))
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return ln.Addr().(*net.TCPAddr).Port
}

func (hr *holdingReceiver) serve(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body) // then a client hanging up cancels r.Context()
	hr.mu.Lock()
	hr.hits++
	hr.inFlight++
	hr.peak = max(hr.peak, hr.inFlight)
	hr.hosts[r.Host] = true
	hr.mu.Unlock()
	select {
	case <-r.Context().Done():
	case <-hr.release:
	}
	hr.mu.Lock()
	hr.inFlight--
	hr.mu.Unlock()
	w.WriteHeader(http.StatusOK)
}

func (hr *holdingReceiver) stats() (inFlight, peak, hits, hosts int) {
	hr.mu.Lock()
	defer hr.mu.Unlock()
	return hr.inFlight, hr.peak, hr.hits, len(hr.hosts)
}

// newFairnessWorker is harness.newWorker with a sender whose timeout
// outlasts the test (so a held request holds its worker for the whole test,
// as a receiver that hangs would) and, when resolver is set, that resolves
// names with it.
func newFairnessWorker(t *testing.T, h *harness, resolver webhook.Resolver) *worker.Worker {
	t.Helper()
	client, err := csm.New(csm.Options{BaseURL: h.simURL, APIKey: testutil.SimAPIKey, Timeout: h.csmTimeout})
	if err != nil {
		t.Fatal(err)
	}
	secret, err := webhook.ParseSecret(h.secretText)
	if err != nil {
		t.Fatal(err)
	}
	sender := webhook.NewSender(webhook.SenderOptions{Timeout: time.Minute, AllowPrivate: true, Resolver: resolver})
	t.Cleanup(sender.CloseIdleConnections)
	h.opts.Webhooks.AttemptTimeout = time.Minute
	return worker.New(h.redis.Client, worker.Deps{Store: h.store, CSM: client, Sender: sender, Signer: webhook.NewSigner(secret)}, h.opts)
}

// attackThenVictim starts one attacker job per webhook URL (all held by
// the holding receiver), waits until the attack holds workers, then runs a
// victim job whose webhooks go to the harness's own receiver, which must
// get every one of them while the attack goes on.
func attackThenVictim(t *testing.T, h *harness, hr *holdingReceiver, attackURLs []string) {
	t.Helper()
	for i, u := range attackURLs {
		h.request("SESSION_ATTACK_"+strconv.Itoa(i)+"_"+testutil.RandomHex(3), csmsim.SessionConfig{Stuck: true},
			func(r *tasks.PreviewRequest) { r.WebhookURL = u })
	}
	testutil.Eventually(t, 15*time.Second, "the attack to hold webhook workers", func() bool {
		inFlight, _, _, _ := hr.stats()
		return inFlight >= 2
	})
	victim := h.request("SESSION_VICTIM_"+testutil.RandomHex(3), csmsim.SessionConfig{GenerationTime: time.Second})
	// Well inside the attack's hold (a minute): the victim's webhooks
	// must not wait for a held worker to come free.
	h.waitFinal(victim.ID, 20*time.Second)
	h.waitEvent(victim.ID, store.EventDone, 20*time.Second)
}

// TestOneReceiverUnderManyNamesGetsOneShare performs the attack of
// security issue #8: one hanging receiver addressed under many spellings
// of one name and address ("localhost", "LOCALHOST", "127.0.0.1",
// "[::ffff:127.0.0.1]", ...), one job each, must hold no more than its
// PerDestination share of the webhook workers, and another receiver's
// webhooks still arrive. Counted by the receivers themselves.
func TestOneReceiverUnderManyNamesGetsOneShare(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.opts.WebhookConcurrency = 4
	h.opts.Webhooks.PerDestination = 2
	hr := newHoldingReceiver(t)
	port := strconv.Itoa(hr.listen(t, "127.0.0.1", 0))
	var urls []string
	for _, host := range []string{"localhost", "LOCALHOST", "LocalHost", "lOcAlHoSt", "127.0.0.1", "[::ffff:127.0.0.1]"} {
		urls = append(urls, "http://"+host+":"+port+"/hook")
	}
	h.run(newFairnessWorker(t, h, nil))
	attackThenVictim(t, h, hr, urls)

	_, peak, hits, hosts := hr.stats()
	t.Logf("held receiver: %d requests under %d spellings, at most %d at once", hits, hosts, peak)
	if peak > 2 {
		t.Fatalf("the receiver held %d deliveries at once under its many names; its share is 2", peak)
	}
}

// wildcardResolver resolves every name under a domain as the test says,
// as wildcard DNS would; anything else is unknown.
type wildcardResolver map[string]netip.Addr

func (r wildcardResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	if a, ok := r[host]; ok {
		return []netip.Addr{a}, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

// TestWildcardNamesShareTheirDomain: names under one registrable domain,
// each resolving to a machine of its own (a.evil.example → 127.0.0.11, ...),
// are one party's; together they hold at most PerDestination workers.
func TestWildcardNamesShareTheirDomain(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.opts.WebhookConcurrency = 4
	h.opts.Webhooks.PerDestination = 2
	hr := newHoldingReceiver(t)
	resolver := wildcardResolver{}
	var urls []string
	for i, label := range []string{"a", "b", "c", "d", "e", "f"} {
		ip := "127.0.0." + strconv.Itoa(11+i)
		port := hr.listen(t, ip, 0)
		resolver[label+".evil.example"] = netip.MustParseAddr(ip)
		urls = append(urls, "http://"+strings.ToUpper(label)+".Evil.Example.:"+strconv.Itoa(port)+"/hook")
	}
	h.run(newFairnessWorker(t, h, resolver))
	attackThenVictim(t, h, hr, urls)

	_, peak, hits, _ := hr.stats()
	t.Logf("evil.example: %d requests to 6 names on 6 addresses, at most %d at once", hits, peak)
	if peak > 2 {
		t.Fatalf("evil.example held %d deliveries at once; its share is 2", peak)
	}
}

// TestOneJobHoldsAtMostPerJob: one job's events to its own webhook_url, a
// receiver that hangs, take at most PerJob webhook workers, however large
// the receiver's own share.
func TestOneJobHoldsAtMostPerJob(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.opts.WebhookConcurrency = 6
	h.opts.Webhooks.PerDestination = 10
	h.opts.Webhooks.PerJob = 2
	hr := newHoldingReceiver(t)
	port := hr.listen(t, "127.0.0.21", 0)
	resolver := wildcardResolver{"hooks.example": netip.MustParseAddr("127.0.0.21")}
	h.run(newFairnessWorker(t, h, resolver))
	job := h.request("SESSION_PERJOB_"+testutil.RandomHex(3), csmsim.SessionConfig{GenerationTime: 4 * time.Second},
		func(r *tasks.PreviewRequest) { r.WebhookURL = "http://hooks.example:" + strconv.Itoa(port) + "/hook" })
	h.waitFinal(job.ID, 30*time.Second)
	evs, err := h.store.Events(context.Background(), job.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) < 3 {
		t.Fatalf("the job has %d events; the cap of 2 needs at least 3 to be tested", len(evs))
	}
	// Two deliveries held, the others snoozed (waiting to retry, no retry
	// spent): then every delivery has been tried, and the peak counts.
	testutil.Eventually(t, 20*time.Second, "two deliveries held and the others snoozed", func() bool {
		waiting := 0
		for _, q := range []string{h.queues.FinalWebhooks, h.queues.Webhooks} {
			if info, err := h.inspector.GetQueueInfo(q); err == nil {
				waiting += info.Retry
			}
		}
		inFlight, _, _, _ := hr.stats()
		return inFlight == 2 && waiting >= len(evs)-2
	})
	_, peak, hits, _ := hr.stats()
	t.Logf("job with %d events: %d requests, at most %d at once", len(evs), hits, peak)
	if peak > 2 {
		t.Fatalf("one job held %d deliveries at once; its share is 2", peak)
	}
}

// TestBusyReceiverKeepsItsWebhooksInline: more polls finishing at once
// than the receiver's PerDestination share lets in. Each delivery waits
// for the seat one of the worker's own deliveries gives back
// (store.AwaitSlots), so each webhook is still sent right after its
// commit; none is handed to a delivery task that would come one to three
// seconds later. Judged from the receiver's deliveries and asynq's own
// queues.
func TestBusyReceiverKeepsItsWebhooksInline(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.opts.Concurrency = 8
	h.opts.Webhooks.PerDestination = 1
	h.rcv.SetDelay(10 * time.Millisecond)
	h.start()
	var jobs []store.Job
	for i := range 8 {
		code := "SESSION_BUSY_" + testutil.RandomHex(4) + "_" + strconv.Itoa(i)
		jobs = append(jobs, h.request(code, csmsim.SessionConfig{GenerationTime: time.Second}))
	}
	for _, j := range jobs {
		if got := h.waitFinal(j.ID, 30*time.Second); got.Status != store.StatusDone {
			t.Fatalf("job %s ended %s, want done", j.ID, got.Status)
		}
		h.waitEvent(j.ID, store.FinalEvent(store.StatusDone), 30*time.Second)
	}
	known, err := h.inspector.Queues()
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{h.queues.FinalWebhooks, h.queues.Webhooks} {
		if !slices.Contains(known, q) {
			continue // no task was ever enqueued there
		}
		info, err := h.inspector.GetQueueInfo(q)
		if err != nil {
			t.Fatal(err)
		}
		if n := info.Processed + info.Size; n > 0 {
			t.Errorf("queue %s ran or holds %d delivery tasks, want none: every webhook sent inline", q, n)
		}
	}
}
