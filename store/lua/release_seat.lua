-- Give back a holder's seat of a job's delivery seats (seats.lua).
-- KEYS[1] job hash; ARGV: holder. Reply: 1.
-- Safe to run blindly twice: the second finds nothing held.
if seats_give_back(KEYS[1], ARGV[1]) then
  redis.call('HDEL', KEYS[1], 'sl')
end
return 1
