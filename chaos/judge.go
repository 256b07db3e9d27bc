package chaos

import (
	"fmt"
	"sort"
	"time"
)

// JobRecord is what the harness saw of one job from outside previewd: the
// simulator's counts for the job's own session and the receiver's webhooks.
// Nothing in it comes from previewd's store.
type JobRecord struct {
	ID      string
	Session string
	// Accepted is how many preview POSTs the simulator accepted (billed)
	// for the session, including those whose reply was lost.
	Accepted int
	// PostsSeen is how many preview POSTs reached the simulator at all,
	// accepted or refused.
	PostsSeen int
	// MeshServed: the simulator answered a session read that showed the
	// preview mesh ready, so a worker learned the job is done.
	MeshServed bool
	// Final is the type of the final webhook the receiver verified
	// (preview.done, preview.failed, ...); "" when none came.
	Final string
	// FinalError is the error code in that webhook, when it has one.
	FinalError string
}

// Observations are the facts a run ends with.
type Observations struct {
	Jobs []JobRecord
	// BodiesByID counts the distinct bodies the receiver got per webhook id.
	BodiesByID    map[string]int
	Kills         int
	RedisRestarts int
	// Recoveries holds, per worker kill that held jobs, the time until they
	// all moved again.
	Recoveries []time.Duration
}

// Problem is one job or webhook that broke a guarantee.
type Problem struct {
	What   string // "lost", "duplicate preview posts", ...
	JobID  string
	Detail string
}

// Verdict is the judged outcome of a run.
type Verdict struct {
	Jobs            int
	Lost            int
	Duplicates      int
	MissingFinal    int
	DifferingBodies int
	// Unsent counts jobs that ended failed as preview_unconfirmed although
	// no POST of theirs ever reached CSM: a worker died between recording
	// its intent and writing the POST, so no later attempt could know the
	// POST was never sent, and none re-sent it. Nothing was billed and the
	// job reached a final status with its final webhook, so the promise
	// held; the count is reported, not failed (see the README).
	Unsent        int
	Kills         int
	RedisRestarts int
	RecoveryP50   time.Duration
	RecoveryMax   time.Duration
	Problems      []Problem
}

// Every session of a run is made to succeed, so a job whose user is not
// told preview.done has lost something: the verdict splits those cases by
// what the simulator saw. A job whose mesh CSM served (a worker read it
// ready) but with no preview.done webhook is a missing final webhook; any
// other job without preview.done never got its mesh to the user: lost.
const eventDone = "preview.done"

// Judge turns observations into a verdict.
func Judge(obs Observations) Verdict {
	v := Verdict{Jobs: len(obs.Jobs), Kills: obs.Kills, RedisRestarts: obs.RedisRestarts}
	for _, j := range obs.Jobs {
		if j.Accepted > 1 {
			v.Duplicates++
			v.Problems = append(v.Problems, Problem{"duplicate preview posts", j.ID,
				fmt.Sprintf("session %s: CSM accepted %d preview POSTs", j.Session, j.Accepted)})
		}
		if j.Final == eventDone {
			continue
		}
		detail := fmt.Sprintf("session %s: %d accepted POSTs, final webhook %s", j.Session, j.Accepted, orNone(j.Final))
		if j.FinalError != "" {
			detail += " (" + j.FinalError + ")"
		}
		if j.Final == "preview.failed" && j.FinalError == "preview_unconfirmed" && j.Accepted == 0 && j.PostsSeen == 0 {
			v.Unsent++
			v.Problems = append(v.Problems, Problem{"unconfirmed, never sent", j.ID, detail + ", no POST reached CSM"})
			continue
		}
		if j.MeshServed {
			v.MissingFinal++
			v.Problems = append(v.Problems, Problem{"missing final webhook", j.ID, detail + ", mesh was served"})
		} else {
			v.Lost++
			v.Problems = append(v.Problems, Problem{"lost", j.ID, detail + ", mesh never served"})
		}
	}
	ids := make([]string, 0, len(obs.BodiesByID))
	for id, n := range obs.BodiesByID {
		if n > 1 {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	for _, id := range ids {
		v.DifferingBodies++
		v.Problems = append(v.Problems, Problem{"webhook id with differing bodies", "",
			fmt.Sprintf("webhook id %s: %d different bodies", id, obs.BodiesByID[id])})
	}
	v.RecoveryP50, v.RecoveryMax = percentiles(obs.Recoveries)
	return v
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// percentiles returns the median (the lower one of an even count) and the
// maximum; zero for no samples.
func percentiles(d []time.Duration) (p50, maxD time.Duration) {
	if len(d) == 0 {
		return 0, 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[(len(s)-1)/2], s[len(s)-1]
}

// Failed reports whether any guarantee was broken.
func (v Verdict) Failed() bool {
	return v.Lost+v.Duplicates+v.MissingFinal+v.DifferingBodies > 0
}

// Line is the one summary line a run ends with.
func (v Verdict) Line() string {
	return fmt.Sprintf("chaos: %d jobs, %d lost, %d duplicate preview posts, %d missing final webhooks, "+
		"%d webhook ids with differing bodies, %d kills, %d redis restarts, recovery p50 %.1fs max %.1fs",
		v.Jobs, v.Lost, v.Duplicates, v.MissingFinal, v.DifferingBodies, v.Kills, v.RedisRestarts,
		v.RecoveryP50.Seconds(), v.RecoveryMax.Seconds())
}

// Contact is one request the simulator received for a session, and the
// worker slot whose CSM link it came through.
type Contact struct {
	Slot int
	At   time.Time
	// Post: the billed preview POST (else a session read).
	Post bool
	// Ready: the reply showed the preview mesh ready.
	Ready bool
}

// Track is what the simulator and the receiver saw of one job over time.
type Track struct {
	JobID    string
	Contacts []Contact // in order of arrival
	FinalAt  time.Time // when the final webhook arrived; zero if never
}

// Recovery measures one worker kill: the jobs the killed worker held are
// those not yet announced final whose last CSM request before the kill came
// through its link at most hold earlier (a task in flight, or one that just
// got its reply), unless that reply already showed the mesh ready: such a
// job's CSM work is over, and when its final webhook comes depends on the
// receiver and the retry schedule, not on the kill. Each held job moves
// again at its next CSM request from any worker, or when its final webhook
// arrives. The result is the longest of
// those waits (until end for a job that never moved) and how many jobs the
// worker held; held == 0 means the kill stranded nothing to measure. A
// slot below 0 stands for every worker at once (a Redis kill).
func Recovery(slot int, killedAt time.Time, tracks []Track, hold time.Duration, end time.Time) (wait time.Duration, held int) {
	for _, t := range tracks {
		if !t.FinalAt.IsZero() && !t.FinalAt.After(killedAt) {
			continue
		}
		var last *Contact
		var next time.Time
		for i := range t.Contacts {
			c := &t.Contacts[i]
			if !c.At.After(killedAt) {
				last = c
				continue
			}
			next = c.At
			break
		}
		if last == nil || (slot >= 0 && last.Slot != slot) || last.Ready || killedAt.Sub(last.At) > hold {
			continue
		}
		held++
		moved := end
		if !next.IsZero() {
			moved = next
		}
		if !t.FinalAt.IsZero() && t.FinalAt.Before(moved) {
			moved = t.FinalAt
		}
		wait = max(wait, moved.Sub(killedAt))
	}
	return wait, held
}
