-- Give back a holder's seat of a job's delivery seats (seats.lua).
-- KEYS[1] job hash; ARGV: holder. Reply: 1 given back, 0 not held.
-- Safe to run blindly twice: the second finds nothing held.
local raw = redis.call('HGET', KEYS[1], 'sl')
if not raw then
  return 0
end
local seats = seats_release(raw, ARGV[1])
if seats == raw then
  return 0
end
if seats == '' then
  redis.call('HDEL', KEYS[1], 'sl')
else
  redis.call('HSET', KEYS[1], 'sl', seats)
end
return 1
