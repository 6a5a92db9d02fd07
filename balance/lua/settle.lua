-- settle: end a call once: release its reservation and slot, debit the hot balance by cost.
-- KEYS[1] account hash   KEYS[2] calls hash   KEYS[3] leases zset   KEYS[4] settled marker
-- ARGV[1] call_key   ARGV[2] cost (micro-units, integer >= 0)   ARGV[3] marker ttl (s)
-- Returns 1 when settled now, 0 when it had already been settled.
local account, calls, leases, settled = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local call_key = ARGV[1]
local cost = tonumber(ARGV[2])

if not redis.call('SET', settled, '1', 'NX', 'EX', ARGV[3]) then
  return 0
end
local known = redis.call('EXISTS', account) == 1
local held = redis.call('HGET', calls, call_key)
if held then
  redis.call('HDEL', calls, call_key)
  redis.call('ZREM', leases, call_key)
  if known and tonumber(held) ~= 0 then  -- HINCRBY refuses "-0"
    redis.call('HINCRBY', account, 'reserved', -tonumber(held))
  end
end
-- An account without hot state is rebuilt from SQL, which already holds this charge.
if known and cost ~= 0 then
  redis.call('HINCRBY', account, 'balance', -cost)
end
return 1
