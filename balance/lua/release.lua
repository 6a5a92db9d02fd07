-- release: drop a call's reservation and concurrency slot without charge.
-- KEYS[1] account hash   KEYS[2] calls hash   KEYS[3] leases zset   KEYS[4] cps zset
-- ARGV[1] call_key   ARGV[2] '1': the call was never admitted after all (a later check
-- denied it), so its calls-per-second admission is refunded too
-- Returns the micro-units released, or -1 when the call held no reservation.
local account, calls, leases, cps = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local call_key = ARGV[1]

if ARGV[2] == '1' then
  redis.call('ZREM', cps, call_key)
end
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
