-- Compare-and-set a job: commit the new document only if the version is the
-- one the writer read, and never move the status backwards or out of a final
-- status. Outbox entries, message records and spilled events of the change
-- are written atomically with it (a job's recent events are in its
-- document; older ones spill to the events hash). Outbox entries are fields
-- of the job hash (their names carry the outbox prefix), written in the
-- job's own HSET and expiring with it.
--
-- Every commit carries a nonce, fresh for each commit attempt, stored in the
-- job's 'w' field. go-redis re-sends a script whose reply was lost to a
-- network error; the re-run then finds the version moved on and the nonce
-- its own, and answers 'ok-again' instead of a 'conflict' that would make
-- the writer apply its change a second time (a second event, a second
-- outbox entry) or conclude that someone else got there first.
-- KEYS[1] job hash, KEYS[2] events hash, KEYS[3] messages hash
-- ARGV: version, status, doc, ttl_ms, nonce, has_events_hash, expire_job,
--       n_events, (event_id, body) * n_events,
--       n_outbox, (entry_field, data) * n_outbox,
--       n_messages, (field, legacy_field, record) * n_messages,
--       seat_holder, seat_lease_end_ms, now_ms, seat_limit
-- Reply: 'ok', 'ok-again' (a re-run recognised by its nonce), or
-- 'conflict', 'notfound', 'illegal'. When seat_holder is not '' (the
-- writer's inline delivery asks for one of the job's delivery seats,
-- seats.lua), 'ok' and 'ok-again' end in ':seat' when the holder holds one
-- after the commit, ':busy' when every seat was held by others; the seat
-- is taken in the commit's own HSET, and only if the commit lands.
local rank = {queued = 0, requesting = 1, generating = 2, done = 3, failed = 3, timed_out = 3, canceled = 3}
local seat_holder = ARGV[#ARGV - 3]
local function seat_reply(reply, held)
  if seat_holder == '' then
    return reply
  end
  if held then
    return reply .. ':seat'
  end
  return reply .. ':busy'
end
-- One read of the fields the checks and the seat need.
local cur = redis.call('HMGET', KEYS[1], 'v', 'w', 'status', 'sl')
local v = cur[1]
if not v then
  return 'notfound'
end
if v ~= ARGV[1] then
  if cur[2] == ARGV[5] then
    return seat_reply('ok-again', seat_holder ~= '' and seats_held(cur[4], seat_holder))
  end
  return 'conflict'
end
local old = cur[3]
local new = ARGV[2]
if old ~= new then
  if rank[new] == nil or rank[old] == nil or rank[old] == 3 or rank[new] < rank[old] then
    return 'illegal'
  end
end
local ttl = ARGV[4]
local final = rank[new] == 3
-- An unfinished job's expiry is its deadline plus the retention, set when
-- it was created: it moves only when the job finishes, or when the change
-- moved the deadline (expire_job).
if final or ARGV[7] == '1' then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
local i = 8
-- Events leaving the document: an event id is written once, its body the
-- snapshot every retry resends.
local n_events = tonumber(ARGV[i])
i = i + 1
for _ = 1, n_events do
  redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 1])
  i = i + 2
end
local fields = {'v', tonumber(v) + 1, 'status', new, 'doc', ARGV[3], 'w', ARGV[5]}
local seated = false
if seat_holder ~= '' then
  local seats = seats_take(cur[4], seat_holder, ARGV[#ARGV - 2], tonumber(ARGV[#ARGV - 1]), tonumber(ARGV[#ARGV]))
  if seats then
    fields[#fields + 1] = 'sl'
    fields[#fields + 1] = seats
    seated = true
  end
end
local n_outbox = tonumber(ARGV[i])
i = i + 1
for _ = 1, 2 * n_outbox do
  fields[#fields + 1] = ARGV[i]
  i = i + 1
end
redis.call('HSET', KEYS[1], unpack(fields))
-- A message record is created once: one a delivery moved on is kept,
-- under its field or under the message's full id, where an earlier
-- version stored it (legacy_field, '' when it cannot be there: the
-- message of an event this commit makes).
local n_messages = tonumber(ARGV[i])
i = i + 1
for _ = 1, n_messages do
  if ARGV[i + 1] == '' or redis.call('HEXISTS', KEYS[3], ARGV[i + 1]) == 0 then
    redis.call('HSETNX', KEYS[3], ARGV[i], ARGV[i + 2])
  end
  i = i + 3
end
-- The job's other keys expire with it. A final job's all move to the
-- retention from now (the events hash only if the job has one). An
-- unfinished job's expiry is the same instant at every commit, so only the
-- keys this commit wrote need it: the events hash may be new (the messages
-- hash takes the job's expiry when it is written). PEXPIRE leaves a missing
-- key missing. (An outbox hash of its own, where versions before outbox
-- fields kept a job's entries, keeps the expiry they gave it.)
if n_events > 0 or (final and ARGV[6] == '1') then
  redis.call('PEXPIRE', KEYS[2], ttl)
end
if n_messages > 0 or final then
  redis.call('PEXPIRE', KEYS[3], ttl)
end
return seat_reply('ok', seated)
