-- caps_hold: an answered call keeps its shared-scope slots until its longest end.
-- KEYS[1] the call's record hash   ARGV[1] call_key   ARGV[2] ttl (ms)
-- The scope keys come from the record (all in the {caps} slot, like the record itself).
-- Returns the number of slots renewed (0 when the call holds none).
local record = KEYS[1]
local call_key = ARGV[1]
local ttl = tonumber(ARGV[2])
local slots = redis.call('HGET', record, 'slots')
if not slots then
  return 0
end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local renewed = 0
for key in string.gmatch(slots, '[^\n]+') do
  renewed = renewed + redis.call('ZADD', key, 'XX', 'CH', now + ttl, call_key)
end
redis.call('PEXPIRE', record, ttl)
return renewed
