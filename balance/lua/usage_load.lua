-- usage_load: write a period's counters from SQL.
-- KEYS[1] usage hash
-- ARGV[1] calls   ARGV[2] billable seconds   ARGV[3] '1': overwrite, '0': only if not loaded
-- ARGV[4] counters ttl (s)
-- Returns {written (1/0), calls, seconds}: the counters now in force.
local usage = KEYS[1]

if ARGV[3] == '0' and redis.call('HEXISTS', usage, 'loaded') == 1 then
  local f = redis.call('HMGET', usage, 'calls', 'seconds')
  return {0, tonumber(f[1] or '0'), tonumber(f[2] or '0')}
end
redis.call('HSET', usage, 'loaded', '1', 'calls', ARGV[1], 'seconds', ARGV[2])
redis.call('EXPIRE', usage, ARGV[4])
return {1, tonumber(ARGV[1]), tonumber(ARGV[2])}
