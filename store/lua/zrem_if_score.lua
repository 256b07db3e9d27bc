-- Remove a member from a sorted set only if its score is still the one the
-- caller read: a writer that refreshed the entry meanwhile keeps it.
-- KEYS[1] sorted set; ARGV: member, score
-- A blind re-run (go-redis re-sends a script whose reply was lost) finds the
-- member gone and does nothing, or finds it re-added by a newer write, whose
-- score differs because index_outbox.lua raises it past every score the
-- member had while it existed (a re-add after the removal takes the writer's
-- clock: it could equal the removed score only if that write fell in the
-- same millisecond or the writer's clock is behind, and then the writer,
-- which flushes after its commit, still enqueues what it wrote).
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) == tonumber(ARGV[2]) then
  return redis.call('ZREM', KEYS[1], ARGV[1])
end
return 0
