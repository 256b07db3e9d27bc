-- Take one of a destination's delivery slots: a sorted set of holders
-- scored by when their lease expires, so a holder that died frees its slot.
-- KEYS[1] slots sorted set
-- ARGV: holder, now_ms, lease_expiry_ms, limit
--
-- Expired holders are swept only when the set looks full: a set with room
-- needs no sweep to admit one more. A blind re-run by the same holder
-- (a lost reply) finds itself a member and only moves its own lease.
local limit = tonumber(ARGV[4])
local n = redis.call('ZCARD', KEYS[1])
if n >= limit then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
  n = redis.call('ZCARD', KEYS[1])
end
if n < limit or redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
  redis.call('PEXPIREAT', KEYS[1], ARGV[3])
  return 1
end
return 0
