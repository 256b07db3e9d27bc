package store

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Worker liveness records. worker/liveness.go explains how they are used;
// the store only keeps them. Every command touches one key, so all of it
// works on Redis Cluster, and every write is safe to repeat:
//
//	<ns>:workers                   sorted set: worker id → last beat (unix ms),
//	                               the registry that rescuers walk
//	<ns>:{w:<id>}:alive            a string with a TTL, refreshed by each beat:
//	                               while it exists the worker is alive (judged
//	                               by Redis's clock, so worker clocks may skew)
//	<ns>:{w:<id>}:inflight         hash: task id → InflightTask (JSON), the
//	                               tasks the worker is running now
//	<ns>:{<job id>}:job r:<task id>  a field of the job's hash, for a task
//	                               of a job: "<expires unix ms> <rescue task
//	                               id>", the copy that took over this task
//	<ns>:superseded:<task id>      a string with a TTL: the same mark, for a
//	                               task of no job (and written with the field
//	                               for workers of earlier versions)

func (s *Store) workersKey() string            { return s.ns + ":workers" }
func (s *Store) aliveKey(worker string) string { return s.ns + ":{w:" + worker + "}:alive" }
func (s *Store) inflightKey(worker string) string {
	return s.ns + ":{w:" + worker + "}:inflight"
}
func (s *Store) supersededKey(taskID string) string { return s.ns + ":superseded:" + taskID }

// supersededField is the job hash field of task taskID's superseded mark.
// The prefix is no other field's (outbox fields begin with "o:").
func supersededField(taskID string) string { return "r:" + taskID }

var (
	//go:embed lua/supersede.lua
	supersedeSource string
	supersedeScript = redis.NewScript(supersedeSource)
)

// InflightTask is what a worker records of a task while it runs it: enough
// for another worker to enqueue a copy if this one dies. A handler that
// returned an error leaves the record, with ReturnedAt set, until asynq is
// seen to have taken the task back.
type InflightTask struct {
	Type      string          `json:"type"`
	Queue     string          `json:"queue"`
	Payload   json.RawMessage `json:"payload"`
	Retried   int             `json:"retried"`
	MaxRetry  int             `json:"max_retry"`
	StartedAt time.Time       `json:"started_at"`
	// ReturnedAt is when the handler returned an error; RetryAt when asynq
	// was to run the task again; Failed whether that return spends a retry.
	ReturnedAt time.Time `json:"returned_at,omitzero"`
	RetryAt    time.Time `json:"retry_at,omitzero"`
	Failed     bool      `json:"failed,omitempty"`
}

// WorkerBeat is a registered worker and the time of its last beat by its
// own clock (for operators; liveness is judged by the alive key's TTL).
type WorkerBeat struct {
	ID       string
	LastBeat time.Time
	score    float64
}

// Beat records that worker is alive for the next ttl. The alive key is set
// before the registry entry, so a rescuer never finds a registered worker
// whose first beat is still under way.
func (s *Store) Beat(ctx context.Context, worker, info string, ttl time.Duration) error {
	if err := s.rdb.Set(ctx, s.aliveKey(worker), info, ttl).Err(); err != nil {
		return fmt.Errorf("worker heartbeat: %w", err)
	}
	if err := s.rdb.ZAdd(ctx, s.workersKey(), redis.Z{Score: float64(s.now().UnixMilli()), Member: worker}).Err(); err != nil {
		return fmt.Errorf("worker heartbeat: register: %w", err)
	}
	return nil
}

// EndBeat withdraws a worker's liveness at a clean stop, so that any task
// it could not finish is rescued at the next round instead of after its
// TTL. The registry entry stays for the rescuer to drop.
func (s *Store) EndBeat(ctx context.Context, worker string) error {
	if err := s.rdb.Del(ctx, s.aliveKey(worker)).Err(); err != nil {
		return fmt.Errorf("worker heartbeat: withdraw: %w", err)
	}
	return nil
}

// maxWorkers bounds one read of the registry: far more worker processes
// than any deployment of previewd runs.
const maxWorkers = 10000

// Workers lists the registered workers.
func (s *Store) Workers(ctx context.Context) ([]WorkerBeat, error) {
	zs, err := s.rdb.ZRangeWithScores(ctx, s.workersKey(), 0, maxWorkers-1).Result()
	if err != nil {
		return nil, fmt.Errorf("list workers: %w", err)
	}
	out := make([]WorkerBeat, 0, len(zs))
	for _, z := range zs {
		id, _ := z.Member.(string)
		out = append(out, WorkerBeat{ID: id, LastBeat: time.UnixMilli(int64(z.Score)), score: z.Score})
	}
	return out, nil
}

// Alive reports which of the workers have a live heartbeat. One EXISTS per
// worker, pipelined (a Cluster client splits the pipeline by slot).
func (s *Store) Alive(ctx context.Context, workers []string) (map[string]bool, error) {
	cmds := make([]*redis.IntCmd, len(workers))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, w := range workers {
			cmds[i] = p.Exists(ctx, s.aliveKey(w))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read worker heartbeats: %w", err)
	}
	alive := make(map[string]bool, len(workers))
	for i, w := range workers {
		alive[w] = cmds[i].Val() == 1
	}
	return alive, nil
}

// dropWorkerScript removes a registry entry only if it still has the score
// the caller read: a worker that beat meanwhile (it was slow, not dead)
// stays registered. One key; a blind re-run finds the entry gone or changed
// and does nothing.
var dropWorkerScript = redis.NewScript(`
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) == tonumber(ARGV[2]) then
  return redis.call('ZREM', KEYS[1], ARGV[1])
end
return 0`)

// DropWorker unregisters a dead worker whose tasks have all been rescued,
// unless it beat since b was read.
func (s *Store) DropWorker(ctx context.Context, b WorkerBeat) error {
	if err := dropWorkerScript.Run(ctx, s.rdb, []string{s.workersKey()}, b.ID, strconv.FormatFloat(b.score, 'f', -1, 64)).Err(); err != nil {
		return fmt.Errorf("unregister worker %s: %w", b.ID, err)
	}
	return nil
}

// ReadAhead names what StartTask reads for a task's handler, in the
// round trip that records the task instead of in rounds of its own.
type ReadAhead struct {
	// Job is the job the handler reads first (GetSeen), "" for none.
	Job string
	// EndpointIDs asks for the endpoint set too (with Job), for a handler
	// whose commit is sure to make an event (EndpointsIn then reads the
	// endpoints themselves).
	EndpointIDs bool
}

// JobRead is what StartTask read ahead of the handler: GetSeen's answer
// for job ID and, when asked for, the endpoint set.
type JobRead struct {
	ID   string
	Job  Job
	Seen Seen
	Err  error
	// EndpointIDs is the endpoint set as it was read, when EndpointsRead.
	EndpointIDs   []string
	EndpointsRead bool
}

// StartTask records that worker runs task taskID, and reports the rescue
// copy that superseded the task if there is one (then the caller must not
// run it). It also reads what ahead names, as GetSeen and Endpoints would:
// the first reads of the task's handler, made in the same round trip
// instead of the next ones. The read is nil when there was none to make,
// when it did not come back (the round trip failed: the handler reads
// itself) or when the task is superseded. A task that names a job to read
// ahead has its superseded mark in that job's hash (see Supersede), read
// in the same HMGET; another's is a key of its own. Two or three commands
// on as many keys, pipelined into one round trip.
func (s *Store) StartTask(ctx context.Context, worker, taskID string, t InflightTask, ahead ReadAhead) (supersededBy string, read *JobRead, err error) {
	raw, err := json.Marshal(t)
	if err != nil {
		return "", nil, fmt.Errorf("encode in-flight task %s: %w", taskID, err)
	}
	var get *redis.StringCmd
	var job *redis.SliceCmd
	var endpoints *redis.StringSliceCmd
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, s.inflightKey(worker), taskID, raw)
		if ahead.Job == "" {
			get = p.Get(ctx, s.supersededKey(taskID))
			return nil
		}
		// GetSeen's fields, then the mark.
		job = p.HMGet(ctx, s.jobKey(ahead.Job), "v", "doc", supersededField(taskID))
		if ahead.EndpointIDs {
			endpoints = s.readEndpointIDsIn(ctx, p)
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return "", nil, fmt.Errorf("record in-flight task %s: %w", taskID, err)
	}
	if job == nil {
		by, err := get.Result()
		switch {
		case errors.Is(err, redis.Nil):
			return "", nil, nil
		case err != nil:
			return "", nil, fmt.Errorf("read supersession of task %s: %w", taskID, err)
		}
		return by, nil, nil
	}
	if vals, err := job.Result(); err == nil {
		if by := s.liveMark(vals[2]); by != "" {
			return by, nil, nil
		}
	}
	j, seen, err := seenFrom(ahead.Job, job)
	read = &JobRead{ID: ahead.Job, Job: j, Seen: seen, Err: err}
	if endpoints != nil {
		// A failed read is no read: the handler reads the set itself.
		read.EndpointIDs, err = endpoints.Result()
		read.EndpointsRead = err == nil
	}
	return "", read, nil
}

// liveMark returns the rescue copy a job hash's superseded mark names, ""
// when there is none or it has expired (a task id can run again, long
// after: a new request under an id whose old task is gone). The expiry is
// by the rescuer's clock, read by the runner's: their skew is nothing
// beside a mark's life (a day or more, Worker.supersededTTL).
func (s *Store) liveMark(v any) string {
	mark, _ := v.(string)
	expires, by, ok := strings.Cut(mark, " ")
	ms, err := strconv.ParseInt(expires, 10, 64)
	if !ok || err != nil || s.now().UnixMilli() >= ms {
		return ""
	}
	return by
}

// RecordTask (re)writes a worker's record of one task. Safe to repeat.
func (s *Store) RecordTask(ctx context.Context, worker, taskID string, t InflightTask) error {
	raw, err := json.Marshal(t)
	if err != nil {
		return fmt.Errorf("encode in-flight task %s: %w", taskID, err)
	}
	if err := s.rdb.HSet(ctx, s.inflightKey(worker), taskID, raw).Err(); err != nil {
		return fmt.Errorf("record in-flight task %s: %w", taskID, err)
	}
	return nil
}

// EndTask removes tasks from a worker's in-flight record. Safe to repeat.
func (s *Store) EndTask(ctx context.Context, worker string, taskIDs ...string) error {
	if len(taskIDs) == 0 {
		return nil
	}
	if err := s.rdb.HDel(ctx, s.inflightKey(worker), taskIDs...).Err(); err != nil {
		return fmt.Errorf("clear in-flight tasks of worker %s: %w", worker, err)
	}
	return nil
}

// InflightTasks returns a worker's in-flight record. An entry that does not
// decode comes back as a zero InflightTask (empty Type), for the caller to
// drop.
func (s *Store) InflightTasks(ctx context.Context, worker string) (map[string]InflightTask, error) {
	raw, err := s.rdb.HGetAll(ctx, s.inflightKey(worker)).Result()
	if err != nil {
		return nil, fmt.Errorf("read in-flight tasks of worker %s: %w", worker, err)
	}
	out := make(map[string]InflightTask, len(raw))
	for id, v := range raw {
		var t InflightTask
		_ = json.Unmarshal([]byte(v), &t) // a corrupt entry stays zero: the caller drops it
		out[id] = t
	}
	return out, nil
}

// Supersede records that rescue copy `by` took over task taskID, for ttl:
// a later run of the original (asynq's own recovery of a dead worker's
// task) finds it and does nothing. A task of job jobID (the job StartTask
// reads ahead for it; "" for none) is marked in the job's hash, where
// StartTask reads the mark with the job at no command of its own, and, for
// workers of earlier versions that read only the key, in the key too
// (rescues are rare: a second round trip costs nothing that matters). A job
// that is gone gets no field. Safe to repeat.
func (s *Store) Supersede(ctx context.Context, taskID, jobID, by string, ttl time.Duration) error {
	mark := strconv.FormatInt(s.now().Add(ttl).UnixMilli(), 10) + " " + by
	if jobID != "" {
		if err := supersedeScript.Run(ctx, s.rdb, []string{s.jobKey(jobID)}, supersededField(taskID), mark).Err(); err != nil {
			return fmt.Errorf("mark task %s superseded: %w", taskID, err)
		}
	}
	if err := s.rdb.Set(ctx, s.supersededKey(taskID), by, ttl).Err(); err != nil {
		return fmt.Errorf("mark task %s superseded: %w", taskID, err)
	}
	return nil
}

// SupersededBy returns the rescue copy that superseded task taskID, of job
// jobID ("" for none) as Supersede names it, or "" when none did.
func (s *Store) SupersededBy(ctx context.Context, taskID, jobID string) (string, error) {
	if jobID != "" {
		mark, err := s.rdb.HGet(ctx, s.jobKey(jobID), supersededField(taskID)).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return "", fmt.Errorf("read supersession of task %s: %w", taskID, err)
		}
		if by := s.liveMark(mark); by != "" {
			return by, nil
		}
	}
	by, err := s.rdb.Get(ctx, s.supersededKey(taskID)).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read supersession of task %s: %w", taskID, err)
	}
	return by, nil
}
