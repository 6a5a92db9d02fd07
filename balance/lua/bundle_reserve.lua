-- bundle_reserve: hold bundled seconds for a call, up to a total, as a lease.
-- KEYS[1] bundle hash   KEYS[2] bundle calls hash   KEYS[3] bundle leases zset
-- ARGV[1] call_key   ARGV[2] total seconds the call wants to hold   ARGV[3] lease ttl (ms)
-- ARGV[4] state ttl (s)
-- Grants min(total - held, available): a first reservation and every extension alike,
-- so a repeated call changes nothing. Returns {reason, held, available} where reason is
-- OK (the call holds its total), BUNDLE_EXHAUSTED (it holds less: the rest is paid with
-- money) or NOT_LOADED (the period's balance is not in Redis: nothing held).
local bundle, calls, leases = KEYS[1], KEYS[2], KEYS[3]
local call_key = ARGV[1]
local total = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])

if redis.call('HEXISTS', bundle, 'allowance') == 0 then
  return {'NOT_LOADED', 0, 0}
end

local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)

-- Expired leases first: their seconds go back to the bundle.
local expired = redis.call('ZRANGEBYSCORE', leases, '-inf', now, 'LIMIT', 0, 256)
for _, key in ipairs(expired) do
  local held = tonumber(redis.call('HGET', calls, key) or '0')
  redis.call('HDEL', calls, key)
  redis.call('ZREM', leases, key)
  if held ~= 0 then
    redis.call('HINCRBY', bundle, 'reserved', -held)
  end
end

local f = redis.call('HMGET', bundle, 'allowance', 'used', 'reserved')
local available = tonumber(f[1]) - tonumber(f[2] or '0') - tonumber(f[3] or '0')
local held = tonumber(redis.call('HGET', calls, call_key) or '0')
local grant = 0
if total > held and available > 0 then
  grant = math.min(total - held, available)
  redis.call('HINCRBY', calls, call_key, grant)
  redis.call('HINCRBY', bundle, 'reserved', grant)
end
if held + grant > 0 then
  redis.call('ZADD', leases, now + ttl, call_key)
  redis.call('EXPIRE', calls, ARGV[4])
  redis.call('EXPIRE', leases, ARGV[4])
end
redis.call('EXPIRE', bundle, ARGV[4])
local reason = 'OK'
if held + grant < total then
  reason = 'BUNDLE_EXHAUSTED'
end
return {reason, held + grant, available - grant}
