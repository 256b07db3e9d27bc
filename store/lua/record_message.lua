-- Save a webhook message's delivery record, expiring with its job.
-- KEYS[1] messages hash, KEYS[2] job hash
-- ARGV: message_id, record, fallback_ttl_ms
--
-- Safe to run blindly twice (a lost reply, go-redis retrying, or the
-- delivery's own ride-through retries): it sets the same field to the same
-- bytes and the same expiry. Only the delivery task that owns the message
-- writes it this way; writes that may race others use update_message.lua.
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local ttl = redis.call('PTTL', KEYS[2])
if ttl <= 0 then
  ttl = ARGV[3]
end
redis.call('PEXPIRE', KEYS[1], ttl)
return 1
