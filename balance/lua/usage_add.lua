-- usage_add: count one settled call in its period's counters, once per call.
-- KEYS[1] usage hash   KEYS[2] counted marker
-- ARGV[1] calls (0 or 1)   ARGV[2] billable seconds   ARGV[3] marker ttl (s)
-- ARGV[4] counters ttl (s)
-- Returns 1 when counted now, 0 when the call was already counted, -1 when the period's
-- counters are not loaded (the marker is kept: their load from SQL includes this call).
local usage, marker = KEYS[1], KEYS[2]

if not redis.call('SET', marker, '1', 'NX', 'EX', ARGV[3]) then
  return 0
end
if redis.call('HEXISTS', usage, 'loaded') == 0 then
  return -1
end
redis.call('HINCRBY', usage, 'calls', ARGV[1])
redis.call('HINCRBY', usage, 'seconds', ARGV[2])
redis.call('EXPIRE', usage, ARGV[4])
return 1
