-- extend: add to a live call's reservation (the next debit slice) and renew its lease.
-- KEYS[1] account hash   KEYS[2] calls hash   KEYS[3] leases zset
-- ARGV[1] call_key   ARGV[2] amount (micro-units, integer >= 0)   ARGV[3] lease ttl (ms)
-- ARGV[4] '1': grant what is available (possibly 0), '0': all or nothing
-- Returns {reason, reserved_micros (call total), granted_micros, available_micros}.
-- A suspended account's calls are not renewed (ACCOUNT_SUSPENDED) unless its suspend_cut
-- is '0'; once the trial window is over, no call is renewed (TRIAL_EXPIRED).
local account, calls, leases = KEYS[1], KEYS[2], KEYS[3]
local call_key = ARGV[1]
local amount = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
local partial = ARGV[4] == '1'

local status = redis.call('HGET', account, 'status')
if not status then
  return {'UNKNOWN_ACCOUNT', 0, 0, 0}
end

local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)

-- Expired leases first: their reservations and concurrency slots are released.
local expired = redis.call('ZRANGEBYSCORE', leases, '-inf', now, 'LIMIT', 0, 256)
for _, key in ipairs(expired) do
  local held = tonumber(redis.call('HGET', calls, key) or '0')
  redis.call('HDEL', calls, key)
  redis.call('ZREM', leases, key)
  if held ~= 0 then
    redis.call('HINCRBY', account, 'reserved', -held)
  end
end

local f = redis.call('HMGET', account, 'balance', 'credit_limit', 'reserved', 'trial_ends',
  'suspend_cut')
local available = tonumber(f[1] or '0') + tonumber(f[2] or '0') - tonumber(f[3] or '0')

local held = redis.call('HGET', calls, call_key)
if not held then
  return {'UNKNOWN_CALL', 0, 0, available}
end
held = tonumber(held)
redis.call('ZADD', leases, now + ttl, call_key)
if status ~= 'active' and (status ~= 'suspended' or f[5] ~= '0') then
  return {'ACCOUNT_SUSPENDED', held, 0, available}
end
local trial_ends = tonumber(f[4] or '-1')
if trial_ends >= 0 and now >= trial_ends then
  return {'TRIAL_EXPIRED', held, 0, available}
end

local grant = amount
if amount > available then
  if partial and available > 0 then
    grant = available
  else
    grant = 0
  end
end
if grant > 0 then
  redis.call('HINCRBY', calls, call_key, grant)
  redis.call('HINCRBY', account, 'reserved', grant)
end
local reason = 'OK'
if grant < amount then
  reason = 'INSUFFICIENT_CREDIT'
end
return {reason, held + grant, grant, available - grant}
