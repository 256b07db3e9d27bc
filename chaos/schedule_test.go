package chaos

import (
	"reflect"
	"testing"
	"time"
)

func TestScheduleIsDeterministicBySeed(t *testing.T) {
	plan := PlanFor(3, 5*time.Second, 75*time.Second)
	tests := []struct {
		name       string
		seedA      uint64
		seedB      uint64
		wantSameAs bool
	}{
		{name: "same seed", seedA: 42, seedB: 42, wantSameAs: true},
		{name: "other seed", seedA: 42, seedB: 43, wantSameAs: false},
		{name: "large seed", seedA: 1<<63 + 7, seedB: 1<<63 + 7, wantSameAs: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := Schedule(tt.seedA, plan), Schedule(tt.seedB, plan)
			if got := reflect.DeepEqual(a, b); got != tt.wantSameAs {
				t.Fatalf("schedules equal = %v, want %v\nA: %v\nB: %v", got, tt.wantSameAs, a, b)
			}
		})
	}
}

func TestScheduleFollowsThePlan(t *testing.T) {
	tests := []struct {
		name    string
		workers int
		start   time.Duration
		window  time.Duration
	}{
		{name: "short run", workers: 3, start: 5 * time.Second, window: 75 * time.Second},
		{name: "full run", workers: 3, start: 5 * time.Second, window: 270 * time.Second},
		{name: "tiny window", workers: 1, start: time.Second, window: 5 * time.Second},
		{name: "five workers", workers: 5, start: 0, window: 60 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			plan := PlanFor(tt.workers, tt.start, tt.window)
			events := Schedule(7, plan)
			got := map[Kind]int{}
			for i, e := range events {
				got[e.Kind]++
				if e.At < plan.Start || e.At > plan.End {
					t.Errorf("event %d at %s, outside [%s, %s]", i, e.At, plan.Start, plan.End)
				}
				if i > 0 && e.At < events[i-1].At {
					t.Errorf("event %d at %s before event %d at %s", i, e.At, i-1, events[i-1].At)
				}
				if (e.Kind == KillWorker || e.Kind == TermWorker) && (e.Worker < 0 || e.Worker >= tt.workers) {
					t.Errorf("event %d kills worker %d of %d", i, e.Worker, tt.workers)
				}
				if e.Duration <= 0 {
					t.Errorf("event %d (%s) lasts %s", i, e, e.Duration)
				}
				if (e.Kind == RedisResetPeer || e.Kind == CSMResetPeer) && (e.Toxicity <= 0 || e.Toxicity > 1) {
					t.Errorf("event %d toxicity %v", i, e.Toxicity)
				}
				if (e.Kind == RedisLatency || e.Kind == CSMLatency) && e.Latency <= 0 {
					t.Errorf("event %d latency %s", i, e.Latency)
				}
			}
			if !reflect.DeepEqual(got, plan.Counts) {
				t.Errorf("kinds %v, want the plan's %v", got, plan.Counts)
			}
			for k, n := range plan.Counts {
				if n < 1 {
					t.Errorf("plan has %d of %s; every kind must occur", n, k)
				}
			}
		})
	}
}

func TestEventString(t *testing.T) {
	tests := []struct {
		e    Event
		want string
	}{
		{Event{At: 12300 * time.Millisecond, Kind: KillWorker, Worker: 2, Duration: time.Second}, "+ 12.3s sigkill-worker worker-2, restart after 1s"},
		{Event{At: 5 * time.Second, Kind: KillRedis, Duration: 2 * time.Second}, "+  5.0s kill-9-redis, down 2s"},
		{Event{At: time.Second, Kind: CSMResetPeer, Toxicity: 0.5, Duration: time.Second}, "+  1.0s csm-reset-peer 50% of connections for 1s"},
		{Event{At: time.Second, Kind: RedisLatency, Latency: 300 * time.Millisecond, Duration: 4 * time.Second}, "+  1.0s redis-latency 300ms for 4s"},
		{Event{At: time.Second, Kind: ReceiverOutage, Duration: 8 * time.Second}, "+  1.0s receiver-outage for 8s"},
	}
	for _, tt := range tests {
		t.Run(tt.e.Kind.String(), func(t *testing.T) {
			if got := tt.e.String(); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}
