-- reserve: check every cap of one account and reserve a first slice of credit as a lease.
-- KEYS[1] account hash   KEYS[2] calls hash   KEYS[3] leases zset   KEYS[4] cps zset
-- ARGV[1] call_key   ARGV[2] amount (micro-units, integer >= 0)   ARGV[3] lease ttl (ms)
-- Checks, in order: status, trial window, concurrency, calls per second, credit.
-- Returns {reason, reserved_micros, available_micros, live_calls}; integers only.
local account, calls, leases, cps = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local call_key = ARGV[1]
local amount = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])

local f = redis.call('HMGET', account, 'status', 'balance', 'credit_limit', 'reserved',
  'concurrency_limit', 'trial_ends', 'cps_limit')
local status = f[1]
if not status then
  return {'UNKNOWN_ACCOUNT', 0, 0, 0}
end

local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)

-- Expired leases first: their reservations and concurrency slots are released.
local freed = 0
local expired = redis.call('ZRANGEBYSCORE', leases, '-inf', now, 'LIMIT', 0, 256)
for _, key in ipairs(expired) do
  local held = tonumber(redis.call('HGET', calls, key) or '0')
  redis.call('HDEL', calls, key)
  redis.call('ZREM', leases, key)
  if held ~= 0 then
    redis.call('HINCRBY', account, 'reserved', -held)
    freed = freed + held
  end
end

local funds = tonumber(f[2] or '0') + tonumber(f[3] or '0')
local reserved = tonumber(f[4] or '0') - freed  -- as read before the expiry freed some
local limit = tonumber(f[5] or '-1')
local trial_ends = tonumber(f[6] or '-1')
local cps_limit = tonumber(f[7] or '-1')

local existing = redis.call('HGET', calls, call_key)
if existing then
  -- Idempotent: a repeated reserve returns the call's reservation and renews its lease.
  redis.call('ZADD', leases, now + ttl, call_key)
  return {'OK', tonumber(existing), funds - reserved, redis.call('HLEN', calls)}
end
if status ~= 'active' then
  return {'ACCOUNT_SUSPENDED', 0, funds - reserved, 0}
end
if trial_ends >= 0 and now >= trial_ends then
  return {'TRIAL_EXPIRED', 0, funds - reserved, 0}
end
local live = redis.call('HLEN', calls)
if limit >= 0 and live >= limit then
  return {'CONCURRENCY_LIMIT', 0, funds - reserved, live}
end
if cps_limit >= 0 then
  -- a sliding window: at most cps_limit admissions in any second
  redis.call('ZREMRANGEBYSCORE', cps, '-inf', now - 1000)
  if redis.call('ZCARD', cps) >= cps_limit then
    return {'CPS_LIMIT', 0, funds - reserved, live}
  end
end
if reserved + amount > funds then
  return {'INSUFFICIENT_CREDIT', 0, funds - reserved, live}
end
redis.call('HSET', calls, call_key, amount)
redis.call('ZADD', leases, now + ttl, call_key)
redis.call('HINCRBY', account, 'reserved', amount)
if cps_limit >= 0 then
  redis.call('ZADD', cps, now, call_key)
  redis.call('PEXPIRE', cps, 2000)
end
return {'OK', amount, funds - reserved - amount, live + 1}
