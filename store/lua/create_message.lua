-- Create a webhook message's delivery record unless it exists, expiring
-- with its job.
-- KEYS[1] messages hash, KEYS[2] job hash
-- ARGV: field, legacy_field ('' = none), record, fallback_ttl_ms
--
-- The record exists if either field holds it: one an earlier version
-- stored under the message's full id (legacy_field) is the message, and a
-- new one beside it would hide how far it got.
--
-- Safe to run blindly twice: HSETNX keeps whichever record is there (its
-- own from the first run, or one a delivery has since moved on), and the
-- reply, which callers ignore, is the only thing that differs.
local created = 0
if ARGV[2] == '' or redis.call('HEXISTS', KEYS[1], ARGV[2]) == 0 then
  created = redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[3])
end
local ttl = redis.call('PTTL', KEYS[2])
if ttl <= 0 then
  ttl = ARGV[4]
end
redis.call('PEXPIRE', KEYS[1], ttl)
return created
