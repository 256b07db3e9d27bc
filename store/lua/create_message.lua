-- Create a webhook message's delivery record unless it exists, expiring
-- with its job.
-- KEYS[1] messages hash, KEYS[2] job hash
-- ARGV: message_id, record, fallback_ttl_ms
--
-- Safe to run blindly twice: HSETNX keeps whichever record is there (its
-- own from the first run, or one a delivery has since moved on), and the
-- reply, which callers ignore, is the only thing that differs.
local created = redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
local ttl = redis.call('PTTL', KEYS[2])
if ttl <= 0 then
  ttl = ARGV[3]
end
redis.call('PEXPIRE', KEYS[1], ttl)
return created
