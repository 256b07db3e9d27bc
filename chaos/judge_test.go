package chaos

import (
	"strings"
	"testing"
	"time"
)

func done(id string) JobRecord {
	return JobRecord{ID: id, Session: "S_" + id, Accepted: 1, MeshServed: true, Final: "preview.done"}
}

func TestJudge(t *testing.T) {
	tests := []struct {
		name     string
		obs      Observations
		wantLine string
		wantFail bool
		wantWhat []string // Problem.What of each problem, in order
	}{
		{
			name: "clean run",
			obs: Observations{
				Jobs: []JobRecord{done("a"), done("b")}, BodiesByID: map[string]int{"msg_1": 1, "msg_2": 1},
				Kills: 4, RedisRestarts: 2, Recoveries: []time.Duration{3 * time.Second, 1500 * time.Millisecond, 9 * time.Second},
			},
			wantLine: "chaos: 2 jobs, 0 lost, 0 duplicate preview posts, 0 missing final webhooks, 0 webhook ids with differing bodies, 4 kills, 2 redis restarts, recovery p50 3.0s max 9.0s",
		},
		{
			name:     "no recoveries measured",
			obs:      Observations{Jobs: []JobRecord{done("a")}},
			wantLine: "chaos: 1 jobs, 0 lost, 0 duplicate preview posts, 0 missing final webhooks, 0 webhook ids with differing bodies, 0 kills, 0 redis restarts, recovery p50 0.0s max 0.0s",
		},
		{
			name: "even count of recoveries takes the lower median",
			obs: Observations{Jobs: []JobRecord{done("a")}, Kills: 4,
				Recoveries: []time.Duration{4 * time.Second, time.Second, 2 * time.Second, 65 * time.Second}},
			wantLine: "chaos: 1 jobs, 0 lost, 0 duplicate preview posts, 0 missing final webhooks, 0 webhook ids with differing bodies, 4 kills, 0 redis restarts, recovery p50 2.0s max 65.0s",
		},
		{
			name: "stranded job with no webhook is lost",
			obs: Observations{Jobs: []JobRecord{done("a"),
				{ID: "b", Session: "S_b", Accepted: 0}}},
			wantLine: "chaos: 2 jobs, 1 lost, 0 duplicate preview posts, 0 missing final webhooks, 0 webhook ids with differing bodies, 0 kills, 0 redis restarts, recovery p50 0.0s max 0.0s",
			wantFail: true, wantWhat: []string{"lost"},
		},
		{
			name: "job failed unconfirmed with no POST ever sent is reported, not lost",
			obs: Observations{Jobs: []JobRecord{done("a"),
				{ID: "b", Session: "S_b", Final: "preview.failed", FinalError: "preview_unconfirmed"}}},
			wantLine: "chaos: 2 jobs, 0 lost, 0 duplicate preview posts, 0 missing final webhooks, 0 webhook ids with differing bodies, 0 kills, 0 redis restarts, recovery p50 0.0s max 0.0s",
			wantWhat: []string{"unconfirmed, never sent"},
		},
		{
			name: "job failed unconfirmed after a refused POST is lost",
			obs: Observations{Jobs: []JobRecord{
				{ID: "a", Session: "S_a", PostsSeen: 1, Final: "preview.failed", FinalError: "preview_unconfirmed"}}},
			wantLine: "chaos: 1 jobs, 1 lost, 0 duplicate preview posts, 0 missing final webhooks, 0 webhook ids with differing bodies, 0 kills, 0 redis restarts, recovery p50 0.0s max 0.0s",
			wantFail: true, wantWhat: []string{"lost"},
		},
		{
			name: "job failed unconfirmed although billed is lost",
			obs: Observations{Jobs: []JobRecord{
				{ID: "a", Session: "S_a", Accepted: 1, Final: "preview.failed", FinalError: "preview_unconfirmed"}}},
			wantLine: "chaos: 1 jobs, 1 lost, 0 duplicate preview posts, 0 missing final webhooks, 0 webhook ids with differing bodies, 0 kills, 0 redis restarts, recovery p50 0.0s max 0.0s",
			wantFail: true, wantWhat: []string{"lost"},
		},
		{
			name: "mesh served but no final webhook",
			obs: Observations{Jobs: []JobRecord{
				{ID: "a", Session: "S_a", Accepted: 1, MeshServed: true}}},
			wantLine: "chaos: 1 jobs, 0 lost, 0 duplicate preview posts, 1 missing final webhooks, 0 webhook ids with differing bodies, 0 kills, 0 redis restarts, recovery p50 0.0s max 0.0s",
			wantFail: true, wantWhat: []string{"missing final webhook"},
		},
		{
			name: "mesh served but the job timed out",
			obs: Observations{Jobs: []JobRecord{
				{ID: "a", Session: "S_a", Accepted: 1, MeshServed: true, Final: "preview.timed_out"}}},
			wantLine: "chaos: 1 jobs, 0 lost, 0 duplicate preview posts, 1 missing final webhooks, 0 webhook ids with differing bodies, 0 kills, 0 redis restarts, recovery p50 0.0s max 0.0s",
			wantFail: true, wantWhat: []string{"missing final webhook"},
		},
		{
			name: "second billed POST of a done job",
			obs: Observations{Jobs: []JobRecord{
				{ID: "a", Session: "S_a", Accepted: 2, MeshServed: true, Final: "preview.done"}}},
			wantLine: "chaos: 1 jobs, 0 lost, 1 duplicate preview posts, 0 missing final webhooks, 0 webhook ids with differing bodies, 0 kills, 0 redis restarts, recovery p50 0.0s max 0.0s",
			wantFail: true, wantWhat: []string{"duplicate preview posts"},
		},
		{
			name: "duplicate and lost at once",
			obs: Observations{Jobs: []JobRecord{
				{ID: "a", Session: "S_a", Accepted: 3}}},
			wantLine: "chaos: 1 jobs, 1 lost, 1 duplicate preview posts, 0 missing final webhooks, 0 webhook ids with differing bodies, 0 kills, 0 redis restarts, recovery p50 0.0s max 0.0s",
			wantFail: true, wantWhat: []string{"duplicate preview posts", "lost"},
		},
		{
			name: "webhook ids with differing bodies",
			obs: Observations{Jobs: []JobRecord{done("a")},
				BodiesByID: map[string]int{"msg_2": 2, "msg_1": 1, "msg_3": 3}},
			wantLine: "chaos: 1 jobs, 0 lost, 0 duplicate preview posts, 0 missing final webhooks, 2 webhook ids with differing bodies, 0 kills, 0 redis restarts, recovery p50 0.0s max 0.0s",
			wantFail: true, wantWhat: []string{"webhook id with differing bodies", "webhook id with differing bodies"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := Judge(tt.obs)
			if got := v.Line(); got != tt.wantLine {
				t.Errorf("line\n got %q\nwant %q", got, tt.wantLine)
			}
			if v.Failed() != tt.wantFail {
				t.Errorf("Failed() = %v, want %v", v.Failed(), tt.wantFail)
			}
			var what []string
			for _, p := range v.Problems {
				what = append(what, p.What)
			}
			if strings.Join(what, ",") != strings.Join(tt.wantWhat, ",") {
				t.Errorf("problems %q, want %q", what, tt.wantWhat)
			}
		})
	}
}

func TestRecovery(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	kill := at(10)
	end := at(100)
	tests := []struct {
		name     string
		tracks   []Track
		wantWait time.Duration
		wantHeld int
	}{
		{
			name:     "held job picked up by another worker",
			tracks:   []Track{{JobID: "a", Contacts: []Contact{{Slot: 0, At: at(8)}, {Slot: 1, At: at(9)}, {Slot: 0, At: at(9.5)}, {Slot: 2, At: at(14)}}}},
			wantWait: 4 * time.Second, wantHeld: 1,
		},
		{
			name: "the slowest held job decides",
			tracks: []Track{
				{JobID: "a", Contacts: []Contact{{Slot: 0, At: at(9)}, {Slot: 1, At: at(11)}}},
				{JobID: "b", Contacts: []Contact{{Slot: 0, At: at(9.9)}, {Slot: 2, At: at(75)}}},
			},
			wantWait: 65 * time.Second, wantHeld: 2,
		},
		{
			name:   "last contact through another worker: not held",
			tracks: []Track{{JobID: "a", Contacts: []Contact{{Slot: 0, At: at(8)}, {Slot: 1, At: at(9.5)}, {Slot: 1, At: at(40)}}}},
		},
		{
			name:   "contact too long before the kill: not held",
			tracks: []Track{{JobID: "a", Contacts: []Contact{{Slot: 0, At: at(5)}, {Slot: 1, At: at(40)}}}},
		},
		{
			name:   "already announced final: not held",
			tracks: []Track{{JobID: "a", Contacts: []Contact{{Slot: 0, At: at(9)}}, FinalAt: at(9.5)}},
		},
		{
			name:   "mesh already served: its CSM work is over, not held",
			tracks: []Track{{JobID: "a", Contacts: []Contact{{Slot: 0, At: at(9), Ready: true}}, FinalAt: at(30)}},
		},
		{
			name:     "final webhook before the next contact counts as moving",
			tracks:   []Track{{JobID: "a", Contacts: []Contact{{Slot: 0, At: at(9.8)}, {Slot: 1, At: at(20)}}, FinalAt: at(12)}},
			wantWait: 2 * time.Second, wantHeld: 1,
		},
		{
			name:     "never moved again: waits until the end",
			tracks:   []Track{{JobID: "a", Contacts: []Contact{{Slot: 0, At: at(9)}}}},
			wantWait: 90 * time.Second, wantHeld: 1,
		},
		{
			name:   "no contact before the kill: not held",
			tracks: []Track{{JobID: "a", Contacts: []Contact{{Slot: 0, At: at(11)}}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wait, held := Recovery(0, kill, tt.tracks, 3*time.Second, end)
			if wait != tt.wantWait || held != tt.wantHeld {
				t.Errorf("Recovery = %s, %d held; want %s, %d held", wait, held, tt.wantWait, tt.wantHeld)
			}
		})
	}
}

func TestRecoveryOfEveryWorker(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	tracks := []Track{
		{JobID: "a", Contacts: []Contact{{Slot: 0, At: at(9)}, {Slot: 1, At: at(20)}}},
		{JobID: "b", Contacts: []Contact{{Slot: 2, At: at(9.5)}, {Slot: 2, At: at(118)}}},
		{JobID: "c", Contacts: []Contact{{Slot: 1, At: at(2)}, {Slot: 1, At: at(30)}}}, // idle at the kill
	}
	tests := []struct {
		name     string
		slot     int
		wantWait time.Duration
		wantHeld int
	}{
		{name: "redis: every worker's jobs", slot: -1, wantWait: 108 * time.Second, wantHeld: 2},
		{name: "worker 0 only", slot: 0, wantWait: 10 * time.Second, wantHeld: 1},
		{name: "worker 1 held nothing", slot: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wait, held := Recovery(tt.slot, at(10), tracks, 3*time.Second, at(200))
			if wait != tt.wantWait || held != tt.wantHeld {
				t.Errorf("Recovery = %s, %d held; want %s, %d held", wait, held, tt.wantWait, tt.wantHeld)
			}
		})
	}
}
