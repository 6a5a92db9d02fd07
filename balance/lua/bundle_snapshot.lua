-- bundle_snapshot: one consistent read of a period's bundle balance.
-- KEYS[1] bundle hash   KEYS[2] bundle calls hash
-- Returns {loaded (1/0), allowance, used, reserved, calls...} where calls is the flat
-- list call_key, seconds, call_key, seconds, ...
local bundle, calls = KEYS[1], KEYS[2]

local f = redis.call('HMGET', bundle, 'allowance', 'used', 'reserved')
if not f[1] then
  return {0}
end
local out = {1, tonumber(f[1]), tonumber(f[2] or '0'), tonumber(f[3] or '0')}
for _, item in ipairs(redis.call('HGETALL', calls)) do
  out[#out + 1] = item
end
return out
