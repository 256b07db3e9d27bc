-- Count one job's preview against the hourly and daily budgets: a set of
-- job ids per window, so a job counts once however often it asks (a blind
-- re-run after a lost reply, a retried task) and a refund is an SREM.
-- KEYS[1] this hour's set, KEYS[2] today's set (one hash tag: one slot)
-- ARGV: job_id, hour_limit, day_limit, hour_ttl_ms, day_ttl_ms (0 = no limit)
local inHour = redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1
local inDay = redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1
if not inHour and tonumber(ARGV[2]) > 0 and redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 'hour'
end
if not inDay and tonumber(ARGV[3]) > 0 and redis.call('SCARD', KEYS[2]) >= tonumber(ARGV[3]) then
  return 'day'
end
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
return 'ok'
