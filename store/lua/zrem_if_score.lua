-- Remove a member from a sorted set only if its score is still the one the
-- caller read: a writer that refreshed the entry meanwhile keeps it.
-- KEYS[1] sorted set; ARGV: member, score
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) == tonumber(ARGV[2]) then
  return redis.call('ZREM', KEYS[1], ARGV[1])
end
return 0
