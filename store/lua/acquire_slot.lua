-- Take one of a destination's delivery slots: a sorted set of holders
-- scored by when their lease expires, so a holder that died frees its slot.
-- KEYS[1] slots sorted set
-- ARGV: holder, now_ms, lease_expiry_ms, limit
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
local held = redis.call('ZSCORE', KEYS[1], ARGV[1])
if held or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[4]) then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
  redis.call('PEXPIREAT', KEYS[1], ARGV[3])
  return 1
end
return 0
