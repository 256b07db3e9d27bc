-- A job's delivery seats: the slots of deliveries to the job's own
-- webhook_url (store.JobSlot), kept in one field of the job hash, 'sl',
-- instead of a sorted set of their own, so that the commit that makes an
-- event takes its inline attempt's seat in its own HMGET and HSET, and the
-- record that attempt saves gives it back in its own HDEL. The field holds
-- one line per holder: "<lease end, unix ms> <holder>". A holder whose
-- lease ended holds nothing; it is dropped at the next take.
--
-- These functions are prepended to every script that uses them.

-- seat_of splits one line of the field: its holder and lease end (nil for
-- a line of no seat).
local function seat_of(line)
  local sp = string.find(line, ' ', 1, true)
  if not sp then
    return nil, nil
  end
  return string.sub(line, sp + 1), tonumber(string.sub(line, 1, sp - 1))
end

-- seats_take returns the field's new value with holder holding a seat until
-- ends_ms, or nil when limit other holders' leases are still running at
-- now_ms. A holder that holds a seat already only moves its lease: a blind
-- re-run takes nothing more.
local function seats_take(raw, holder, ends_ms, now_ms, limit)
  local kept = {}
  for line in string.gmatch(raw or '', '[^\n]+') do
    local who, ends = seat_of(line)
    if who and who ~= holder and ends > now_ms then
      kept[#kept + 1] = line
    end
  end
  if #kept >= limit then
    return nil
  end
  kept[#kept + 1] = ends_ms .. ' ' .. holder
  return table.concat(kept, '\n')
end

-- seats_held reports whether holder holds a seat in raw.
local function seats_held(raw, holder)
  for line in string.gmatch(raw or '', '[^\n]+') do
    if seat_of(line) == holder then
      return true
    end
  end
  return false
end

-- seats_give_back gives holder's seat of job hash key back. It returns
-- true when no seat is left: the field is then the caller's to delete, so
-- that one HDEL deletes it beside others; otherwise it has written what is
-- left itself (nothing when holder held none, or the job is gone).
local function seats_give_back(key, holder)
  local raw = redis.call('HGET', key, 'sl')
  if not raw then
    return false
  end
  local kept = {}
  for line in string.gmatch(raw, '[^\n]+') do
    if seat_of(line) ~= holder then
      kept[#kept + 1] = line
    end
  end
  if #kept == 0 then
    return true
  end
  local seats = table.concat(kept, '\n')
  if seats ~= raw then
    redis.call('HSET', key, 'sl', seats)
  end
  return false
end
