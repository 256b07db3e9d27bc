-- Compare-and-set one webhook message's delivery record, expiring with its
-- job, together with the outbox entries that must exist if and only if the
-- new record does (a replay's delivery task): fields of the job hash, as
-- every outbox entry is.
-- KEYS[1] messages hash, KEYS[2] job hash
-- ARGV: field, legacy_field ('' = none), expected record at field,
--       expected record at legacy_field ('' = no record), new record,
--       fallback_ttl_ms, n_outbox, (entry_field, data) * n_outbox
--
-- The record is written to field; a record an earlier version stored
-- under the message's full id (legacy_field) is compared as well, and
-- deleted by the write that moves it.
--
-- A blind re-run (go-redis retrying after a lost reply) recognises itself:
-- the record is then byte for byte the one this write carries, and the
-- outbox entries went in with it in the same run, so it answers 'ok'
-- without writing again. Any other record means another writer got there
-- first: 'conflict', and the caller reloads and decides again. 'nojob':
-- the job has expired, and a delivery (outbox entries) was asked for.
local cur, legacy
if ARGV[2] == '' then
  cur = redis.call('HGET', KEYS[1], ARGV[1])
else
  local both = redis.call('HMGET', KEYS[1], ARGV[1], ARGV[2])
  cur, legacy = both[1], both[2]
end
if cur == ARGV[5] then
  return 'ok'
end
if (cur or '') ~= ARGV[3] or (legacy or '') ~= ARGV[4] then
  return 'conflict'
end
local ttl = redis.call('PTTL', KEYS[2])
local n = tonumber(ARGV[7])
-- Outbox entries need their job: HSET would make a job hash of outbox
-- fields alone. A job gone (expired) takes no new delivery.
if n > 0 and ttl == -2 then
  return 'nojob'
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[5])
if legacy then
  redis.call('HDEL', KEYS[1], ARGV[2])
end
if ttl <= 0 then
  ttl = ARGV[6]
end
redis.call('PEXPIRE', KEYS[1], ttl)
if n > 0 then
  local fields = {}
  for i = 8, 7 + 2 * n do
    fields[#fields + 1] = ARGV[i]
  end
  redis.call('HSET', KEYS[2], unpack(fields))
end
return 'ok'
