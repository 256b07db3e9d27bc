-- Mark a task of a job superseded by its rescue copy, in the job's hash.
-- KEYS[1] job hash
-- ARGV: field, mark ('<expires unix ms> <rescue task id>')
--
-- A job that is gone gets no mark (HSET would make a hash of the mark
-- alone, never expiring): its tasks find no job and do nothing anyway.
-- Safe to run blindly twice: it sets the same field to the same bytes.
if redis.call('HEXISTS', KEYS[1], 'v') == 0 then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
