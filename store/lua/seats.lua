-- A job's delivery seats: the slots of deliveries to the job's own
-- webhook_url (store.JobSlot), kept in one field of the job hash, 'sl',
-- instead of a sorted set of their own, so that the commit that makes an
-- event takes its inline attempt's seat in its own HMGET and HSET, and the
-- record that attempt saves gives it back in its own HDEL. The field holds
-- one line per holder: "<lease end, unix ms> <holder>". A holder whose
-- lease ended holds nothing; it is dropped at the next take.
--
-- These functions are prepended to every script that uses them.

-- seats_take returns the field's new value with holder holding a seat until
-- ends_ms, or nil when limit other holders' leases are still running at
-- now_ms. A holder that holds a seat already only moves its lease: a blind
-- re-run takes nothing more.
local function seats_take(raw, holder, ends_ms, now_ms, limit)
  local kept = {}
  if raw then
    for line in string.gmatch(raw, '[^\n]+') do
      local sp = string.find(line, ' ', 1, true)
      if sp and string.sub(line, sp + 1) ~= holder and tonumber(string.sub(line, 1, sp - 1)) > now_ms then
        kept[#kept + 1] = line
      end
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
  if not raw then
    return false
  end
  for line in string.gmatch(raw, '[^\n]+') do
    local sp = string.find(line, ' ', 1, true)
    if sp and string.sub(line, sp + 1) == holder then
      return true
    end
  end
  return false
end

-- seats_release returns the field's value without holder's seat: '' when
-- no seat is left (the caller deletes the field), raw itself when holder
-- held none.
local function seats_release(raw, holder)
  local kept = {}
  for line in string.gmatch(raw, '[^\n]+') do
    local sp = string.find(line, ' ', 1, true)
    if not sp or string.sub(line, sp + 1) ~= holder then
      kept[#kept + 1] = line
    end
  end
  return table.concat(kept, '\n')
end
