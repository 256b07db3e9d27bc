-- Take one of a job's delivery seats (seats.lua) for a delivery task.
-- KEYS[1] job hash; ARGV: holder, lease end (unix ms), now (unix ms), limit
-- Reply: 1 taken (or the job is gone: nothing left to bound), 0 all busy.
-- Safe to run blindly twice: the holder only moves its lease.
local cur = redis.call('HMGET', KEYS[1], 'v', 'sl')
if not cur[1] then
  return 1
end
local seats = seats_take(cur[2], ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]))
if not seats then
  return 0
end
redis.call('HSET', KEYS[1], 'sl', seats)
return 1
