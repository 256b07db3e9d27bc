package worker

import (
	"testing"
	"time"
)

// TestExpectedWait: polls of a preview are rare early and dense near its
// expected end (turbo about a minute, HD 90 minutes), then thin out with
// the overrun; with no expectation the policy alone decides.
func TestExpectedWait(t *testing.T) {
	at := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	cases := []struct {
		name    string
		mesh    string
		elapsed time.Duration
		want    time.Duration
	}{
		{"turbo just accepted", "turbo", 0, 30 * time.Second},
		{"turbo near its end", "turbo", 50 * time.Second, 5 * time.Second},
		{"turbo late by 4 min", "turbo", 5 * time.Minute, time.Minute},
		{"hd just accepted", "hd", 0, 45 * time.Minute},
		{"hd at 45 min", "hd", 45 * time.Minute, 22*time.Minute + 30*time.Second},
		{"hd at 85 min", "hd", 85 * time.Minute, 150 * time.Second},
		{"hd at its end", "hd", 90 * time.Minute, 0},
		{"hd late by an hour", "hd", 150 * time.Minute, 15 * time.Minute},
		{"fast_sculpt", "fast_sculpt", time.Minute, 2 * time.Minute},
		{"unknown kind", "ultra", time.Minute, 0},
		{"no kind", "", time.Minute, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := expectedWait(c.mesh, &at, at.Add(c.elapsed)); got != c.want {
				t.Fatalf("expectedWait(%q, +%s) = %s, want %s", c.mesh, c.elapsed, got, c.want)
			}
		})
	}
	if got := expectedWait("hd", nil, at); got != 0 {
		t.Fatalf("without an acceptance time: %s, want 0", got)
	}
}

// TestExpectedScheduleFitsTheBudget: 5,000 HD previews running at once
// (each taking its expected 90 min, or 30 min longer), polled by the
// expected-duration schedule with the 5 min safety net of pushes, stay
// with the new requests that keep 5,000 jobs running (one a job's
// duration, within the requests' 30% share) inside a 10 req/s CSM budget;
// each is detected within its schedule: the last wait before its end. The schedule is walked poll by poll, as the
// poll handler computes it.
func TestExpectedScheduleFitsTheBudget(t *testing.T) {
	const jobs, rate, share = 5000, 10.0, 0.7 // cmd/previewd's pollShare
	p := PollPolicy{Interval: 5 * time.Second, MaxInterval: time.Minute, PushInterval: 5 * time.Minute}
	at := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	for _, took := range []time.Duration{90 * time.Minute, 120 * time.Minute} {
		polls, now := 1, at.Add(p.Interval) // the first poll: the policy's, before the kind is known
		var wait time.Duration
		for now.Sub(at) < took {
			wait = max(p.PushInterval, expectedWait("hd", &at, now)) // safety net without jitter
			now = now.Add(wait)
			polls++
		}
		late := now.Sub(at.Add(took))
		if late > wait {
			t.Fatalf("an HD preview of %s detected %s late, past its last wait %s", took, late, wait)
		}
		perSecond := float64(jobs) * float64(polls) / now.Sub(at).Seconds()
		t.Logf("HD preview of %s: %d polls, detected %s after its end (schedule's wait %s); %d such jobs poll %.2f/s of a %.0f/s budget",
			took, polls, late.Round(time.Second), wait.Round(time.Second), jobs, perSecond, rate)
		// Requests may use only their share; polls may use every turn
		// requests leave. Both progress when what both need fits the rate.
		need := float64(jobs) / took.Seconds()
		if need > rate*(1-share) {
			t.Fatalf("keeping %d jobs running takes %.2f requests/s, more than their share %.1f/s", jobs, need, rate*(1-share))
		}
		if perSecond+need > rate {
			t.Fatalf("%d jobs poll %.2f/s and need %.2f requests/s: more than the %.0f/s budget", jobs, perSecond, need, rate)
		}
	}
}

// TestExpectedOverride: a policy's Expected replaces CSM's figures in the
// schedule (the bench compresses time with it); without it they apply.
func TestExpectedOverride(t *testing.T) {
	at := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	compressed := PollPolicy{Expected: func(mesh string) time.Duration { return ExpectedDuration(mesh) / 60 }}
	cases := []struct {
		name    string
		p       PollPolicy
		elapsed time.Duration
		want    time.Duration
	}{
		{"CSM's figures, hd at 45 min", PollPolicy{}, 45 * time.Minute, 22*time.Minute + 30*time.Second},
		{"compressed ×60, hd at 45 s", compressed, 45 * time.Second, 22*time.Second + 500*time.Millisecond},
		{"compressed ×60, hd late by 60 s", compressed, 150 * time.Second, 15 * time.Second},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := c.p.expectedWait("hd", &at, at.Add(c.elapsed)); got != c.want {
				t.Fatalf("expectedWait(hd, +%s) = %s, want %s", c.elapsed, got, c.want)
			}
		})
	}
}
