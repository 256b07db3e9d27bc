-- Create a job unless it exists; the job key is the idempotency record.
-- The creator's nonce is kept in 'w' (the field every commit's nonce goes
-- to): a re-run of this script after a lost reply finds its own nonce and
-- answers 'created' again, as long as nothing changed the job since.
-- Outbox entries are fields of the job hash (their names carry the outbox
-- prefix), written in its one HSET and expiring with it.
-- KEYS[1] job hash
-- ARGV: doc, status, fingerprint, ttl_ms, nonce, n_outbox, (entry_field, data) * n_outbox
if redis.call('EXISTS', KEYS[1]) == 1 then
  local cur = redis.call('HMGET', KEYS[1], 'w', 'rhash', 'doc')
  local mine = 0
  if cur[1] == ARGV[5] then
    mine = 1
  end
  return {0, cur[2] or '', cur[3] or '', mine}
end
local fields = {'v', 1, 'status', ARGV[2], 'doc', ARGV[1], 'rhash', ARGV[3], 'w', ARGV[5]}
for i = 7, 6 + 2 * tonumber(ARGV[6]) do
  fields[#fields + 1] = ARGV[i]
end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return {1}
