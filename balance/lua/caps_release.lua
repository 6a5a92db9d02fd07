-- caps_release: give back the shared-scope slots one call holds.
-- KEYS[1] the call's record hash   ARGV[1] call_key
-- ARGV[2] '1': the call was denied by a later check, so its CPS admissions go back too
-- The scope keys come from the record (all in the {caps} slot, like the record itself).
-- Returns the number of slots released (0 when the call held none: idempotent).
local record = KEYS[1]
local call_key = ARGV[1]
local fields = redis.call('HMGET', record, 'slots', 'cps')
if not fields[1] then
  return 0
end
local released = 0
for key in string.gmatch(fields[1], '[^\n]+') do
  released = released + redis.call('ZREM', key, call_key)
end
if ARGV[2] == '1' and fields[2] then
  for key in string.gmatch(fields[2], '[^\n]+') do
    redis.call('ZREM', key, call_key)
  end
end
redis.call('DEL', record)
return released
