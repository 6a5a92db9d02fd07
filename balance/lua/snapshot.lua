-- snapshot: one consistent read of an account's hot state.
-- KEYS[1] account hash   KEYS[2] calls hash
-- Returns {exists, balance, credit_limit, reserved, status, concurrency_limit, calls...}
-- where calls is the flat list call_key, micro-units, call_key, micro-units, ...
local account, calls = KEYS[1], KEYS[2]

local f = redis.call('HMGET', account, 'status', 'balance', 'credit_limit', 'reserved',
  'concurrency_limit')
if not f[1] then
  return {0}
end
local out = {1, tonumber(f[2] or '0'), tonumber(f[3] or '0'), tonumber(f[4] or '0'), f[1],
  tonumber(f[5] or '-1')}
for _, item in ipairs(redis.call('HGETALL', calls)) do
  out[#out + 1] = item
end
return out
