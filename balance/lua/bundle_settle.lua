-- bundle_settle: end a call's use of a bundle once: drop its lease, count the seconds used.
-- KEYS[1] bundle hash   KEYS[2] bundle calls hash   KEYS[3] bundle leases zset
-- KEYS[4] bundle settled marker
-- ARGV[1] call_key   ARGV[2] seconds used (integer >= 0)   ARGV[3] marker ttl (s)
-- Returns 1 when settled now, 0 when it had already been settled.
local bundle, calls, leases, settled = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local call_key = ARGV[1]
local used = tonumber(ARGV[2])

if not redis.call('SET', settled, '1', 'NX', 'EX', ARGV[3]) then
  return 0
end
local loaded = redis.call('HEXISTS', bundle, 'allowance') == 1
local held = redis.call('HGET', calls, call_key)
redis.call('ZREM', leases, call_key)
if held then
  redis.call('HDEL', calls, call_key)
  if loaded then
    redis.call('HINCRBY', bundle, 'reserved', -tonumber(held))
  end
end
-- A balance not loaded is loaded from SQL, which already holds this call's seconds.
if loaded and used ~= 0 then
  redis.call('HINCRBY', bundle, 'used', used)
end
return 1
