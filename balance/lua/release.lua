-- release: drop a call's reservation and concurrency slot without charge.
-- KEYS[1] account hash   KEYS[2] calls hash   KEYS[3] leases zset
-- ARGV[1] call_key
-- Returns the micro-units released, or -1 when the call held no reservation.
local account, calls, leases = KEYS[1], KEYS[2], KEYS[3]
local call_key = ARGV[1]

local held = redis.call('HGET', calls, call_key)
redis.call('ZREM', leases, call_key)
if not held then
  return -1
end
redis.call('HDEL', calls, call_key)
held = tonumber(held)
if held ~= 0 and redis.call('EXISTS', account) == 1 then
  redis.call('HINCRBY', account, 'reserved', -held)
end
return held
