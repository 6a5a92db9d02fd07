-- usage_read: one consistent read of a period's counters.
-- KEYS[1] usage hash
-- Returns {loaded (1/0), calls, seconds}.
local f = redis.call('HMGET', KEYS[1], 'loaded', 'calls', 'seconds')
if not f[1] then
  return {0, 0, 0}
end
return {1, tonumber(f[2] or '0'), tonumber(f[3] or '0')}
