-- Save a webhook message's delivery record, expiring with its job.
-- KEYS[1] messages hash, KEYS[2] job hash
-- ARGV: field, legacy_field ('' = none), record, fallback_ttl_ms,
--       seat_holder ('' = none), outbox_field... (none or more; '' = none)
--
-- seat_holder gives back that holder's seat of the job's delivery seats
-- (seats.lua), the attempt's the record is of: in the HDEL of the outbox
-- fields when it was the last seat held.
--
-- The outbox fields are job outbox entries acknowledged with the record:
-- the entry of the message's delivery task, which the record makes
-- needless (a delivery made right after its commit), and those of tasks
-- the writer enqueued before the attempt: both or neither.
--
-- Safe to run blindly twice (a lost reply, go-redis retrying, or the
-- delivery's own ride-through retries): it sets the same field to the same
-- bytes and the same expiry. Only the delivery task that owns the message
-- writes it this way; writes that may race others use update_message.lua.
--
-- A record that was there already (the usual case: the commit that made
-- the event created it) finds the hash expiring with its job: every writer
-- of a new record sets the job's expiry, and every commit that moves the
-- job's expiry (its final one, and any after) moves the hash's with it.
-- Only a new record needs the expiry looked up, and only then can the
-- record be one an earlier version stored under the message's full id
-- (legacy_field): it moves to the field, in this same run.
local acks = {}
for i = 6, #ARGV do
  if ARGV[i] ~= '' then
    acks[#acks + 1] = ARGV[i]
  end
end
if ARGV[5] ~= '' and seats_give_back(KEYS[2], ARGV[5]) then
  acks[#acks + 1] = 'sl'
end
if #acks > 0 then
  redis.call('HDEL', KEYS[2], unpack(acks))
end
if redis.call('HSET', KEYS[1], ARGV[1], ARGV[3]) == 0 then
  return 1
end
if ARGV[2] ~= '' then
  redis.call('HDEL', KEYS[1], ARGV[2])
end
local ttl = redis.call('PTTL', KEYS[2])
if ttl <= 0 then
  ttl = ARGV[4]
end
redis.call('PEXPIRE', KEYS[1], ttl)
return 1
