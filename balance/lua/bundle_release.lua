-- bundle_release: drop a call's bundle reservation without using it.
-- KEYS[1] bundle hash   KEYS[2] bundle calls hash   KEYS[3] bundle leases zset
-- ARGV[1] call_key
-- Returns the seconds released, or -1 when the call held none.
local bundle, calls, leases = KEYS[1], KEYS[2], KEYS[3]
local call_key = ARGV[1]

local held = redis.call('HGET', calls, call_key)
redis.call('ZREM', leases, call_key)
if not held then
  return -1
end
redis.call('HDEL', calls, call_key)
held = tonumber(held)
if held ~= 0 and redis.call('HEXISTS', bundle, 'allowance') == 1 then
  redis.call('HINCRBY', bundle, 'reserved', -held)
end
return held
