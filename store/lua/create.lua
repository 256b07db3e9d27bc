-- Create a job unless it exists; the job key is the idempotency record.
-- The creator's nonce is kept in 'w' (the field every commit's nonce goes
-- to): a re-run of this script after a lost reply finds its own nonce and
-- answers 'created' again, as long as nothing changed the job since.
-- KEYS[1] job hash, KEYS[2] outbox hash
-- ARGV: doc, status, fingerprint, ttl_ms, nonce, n_outbox, (entry_id, data) * n_outbox
if redis.call('EXISTS', KEYS[1]) == 1 then
  local cur = redis.call('HMGET', KEYS[1], 'w', 'rhash', 'doc')
  local mine = 0
  if cur[1] == ARGV[5] then
    mine = 1
  end
  return {0, cur[2] or '', cur[3] or '', mine}
end
redis.call('HSET', KEYS[1], 'v', 1, 'status', ARGV[2], 'doc', ARGV[1], 'rhash', ARGV[3], 'w', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
local n = tonumber(ARGV[6])
local i = 7
for _ = 1, n do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  i = i + 2
end
if n > 0 then
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
return {1}
