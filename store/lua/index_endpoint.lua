-- Add an endpoint to the endpoint index unless the index already holds the
-- cap: the check and the insert are one command, so concurrent creators can
-- never together pass the cap.
-- KEYS[1] the endpoint index (a set); ARGV: endpoint id, cap
-- Returns 1 when the id is in the index, 0 when it was refused. A blind
-- re-run (go-redis re-sends a script whose reply was lost) finds the id
-- there and answers 1 again, whatever the count is now.
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then
  return 1
end
if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('SADD', KEYS[1], ARGV[1])
return 1
