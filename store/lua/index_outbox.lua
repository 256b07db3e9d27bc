-- Index a job's outbox. The score is the writer's clock in ms, raised above
-- the entry's current score when needed, so that every (re-)index changes
-- the score: a guarded drop (zrem_if_score.lua) that read the old score then
-- leaves the entry alone, even when two writes fall in one millisecond or
-- the writer's clock is behind the last writer's.
-- KEYS[1] outbox index; ARGV: job id, now_ms. Returns the score written.
-- A blind re-run (go-redis re-sends a script whose reply was lost) raises
-- the score once more: harmless, the entry stays, a guarded drop that read
-- the older score keeps it, and the sweeper sees it a millisecond later.
local s = tonumber(ARGV[2])
local cur = redis.call('ZSCORE', KEYS[1], ARGV[1])
if cur and tonumber(cur) >= s then
  s = tonumber(cur) + 1
end
local score = string.format('%.0f', s)
redis.call('ZADD', KEYS[1], score, ARGV[1])
-- The score written: a flush that follows the writer's commit drops the
-- entry by it, without reading it back (tasks.Enqueuer.FlushCommitted).
return score
