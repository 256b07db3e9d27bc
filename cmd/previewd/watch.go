package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/previewd/previewd/store"
	"github.com/previewd/previewd/tasks"
)

// waitFlags are the flags of a command that can follow a job to its end:
// `status --watch`, `enqueue --wait`.
type waitFlags struct {
	name     string // watch or wait
	on       bool
	interval time.Duration
	timeout  time.Duration
}

func addWaitFlags(fs *flagSet, name, usage string) *waitFlags {
	w := &waitFlags{name: name}
	fs.BoolVar(&w.on, name, false, usage)
	fs.DurationVar(&w.interval, "interval", time.Second, "with --"+name+": read the job every `D`")
	fs.DurationVar(&w.timeout, "timeout", 0, "with --"+name+": give up after `D` (exit 1; the job goes on); 0 waits until the job ends")
	return w
}

func (w *waitFlags) check(fs *flagSet) error {
	switch {
	case w.interval < 100*time.Millisecond:
		return fs.usageError("invalid --interval: must be at least 100ms")
	case w.timeout < 0:
		return fs.usageError("invalid --timeout: must not be negative")
	}
	return nil
}

// jobReader is what follow reads jobs from.
type jobReader interface {
	Job(ctx context.Context, id string) (store.Job, error)
}

var _ jobReader = (*tasks.Client)(nil)

// outageGrace is how long follow rides out a Redis that does not answer (a
// restart, a failover) before it gives up.
const outageGrace = 30 * time.Second

// follow reads the job every interval until it is final and returns it;
// onChange gets the job first, then at each change of its status, upstream
// status or percent. The job's record is read, not its events: a change
// shorter than the interval may be missed, never the final status.
func follow(ctx context.Context, c jobReader, id string, w *waitFlags, onChange func(store.Job) error) (store.Job, error) {
	if w.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, w.timeout)
		defer cancel()
	}
	tick := time.NewTicker(w.interval)
	defer tick.Stop()
	var last store.Job
	var failingSince time.Time
	for first := true; ; {
		j, err := c.Job(ctx, id)
		switch {
		case err == nil:
			failingSince = time.Time{}
			if first || changed(last, j) {
				if err := onChange(j); err != nil {
					return j, err
				}
			}
			first, last = false, j
			if j.Status.Final() {
				return j, nil
			}
		case ctx.Err() != nil:
		case errors.Is(err, store.ErrNotFound):
			return store.Job{}, jobNotFound(err, id)
		case failingSince.IsZero():
			failingSince = time.Now()
		case time.Since(failingSince) > outageGrace:
			return last, fmt.Errorf("reading job %s: %w", id, err)
		}
		select {
		case <-ctx.Done():
			if first {
				return last, ctx.Err()
			}
			return last, fmt.Errorf("job %s is still %s after --timeout %s; it goes on (previewd status %s --watch follows it)", id, last.Status, w.timeout, id)
		case <-tick.C:
		}
	}
}

func changed(a, b store.Job) bool {
	pa, pb := -1, -1
	if a.PercentDone != nil {
		pa = *a.PercentDone
	}
	if b.PercentDone != nil {
		pb = *b.PercentDone
	}
	return a.Status != b.Status || a.UpstreamStatus != b.UpstreamStatus || pa != pb
}

// writeChange prints one line about where a job is:
//
//	2026-12-02T02:30:03Z generating 40% (upstream training_preview)
//	2026-12-02T02:30:09Z done 100% (upstream preview_done) meshes: glb, obj
func writeChange(w io.Writer, j store.Job) error {
	parts := []string{j.UpdatedAt.UTC().Format(time.RFC3339), string(j.Status)}
	if j.PercentDone != nil {
		parts = append(parts, fmt.Sprintf("%d%%", *j.PercentDone))
	}
	if j.UpstreamStatus != "" {
		parts = append(parts, "(upstream "+j.UpstreamStatus+")")
	}
	if len(j.MeshURLs) > 0 {
		formats := make([]string, 0, len(j.MeshURLs))
		for f := range j.MeshURLs {
			formats = append(formats, f)
		}
		sort.Strings(formats)
		parts = append(parts, "meshes: "+strings.Join(formats, ", "))
	}
	if j.Error != nil {
		parts = append(parts, j.Error.Code+": "+j.Error.Message)
	}
	_, err := fmt.Fprintln(w, strings.Join(parts, " "))
	return err
}

// endedBadly is the error of a final job that is not done: the command
// exits 1 with it.
func endedBadly(j store.Job) error {
	if j.Status == store.StatusDone {
		return nil
	}
	msg := fmt.Sprintf("job %s ended %s", j.ID, j.Status)
	if j.Error != nil {
		msg += ": " + j.Error.Code + ": " + j.Error.Message
	}
	return errors.New(msg)
}
