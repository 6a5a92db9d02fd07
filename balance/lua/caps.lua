-- caps: admit one call on every shared scope it needs (resellers, a trunk), atomically.
-- KEYS[1] the call's record hash   KEYS[2k], KEYS[2k+1] scope k's slots zset and cps zset
-- ARGV[1] call_key   ARGV[2] slot ttl (ms)   ARGV[3] required scope count R
-- ARGV[4] alternative scope count A   then per scope (R required first, then A
-- alternatives in route order): concurrency_limit, cps_limit (-1: none)
-- Every required scope must admit the call; of the alternatives (the trunks of the
-- route list) the first that admits it is taken. Nothing is held on a denial.
-- Returns {reason, scope (1-based index of the denying scope or the taken alternative)}.
local record = KEYS[1]
local call_key = ARGV[1]
local ttl = tonumber(ARGV[2])
local required = tonumber(ARGV[3])
local alternatives = tonumber(ARGV[4])

if redis.call('EXISTS', record) == 1 then
  return {'OK', tonumber(redis.call('HGET', record, 'taken') or '0')}
end

local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)

local function check(k)
  local slots, cps = KEYS[2 * k], KEYS[2 * k + 1]
  local limit = tonumber(ARGV[3 + 2 * k])
  local cps_limit = tonumber(ARGV[4 + 2 * k])
  if limit >= 0 then
    redis.call('ZREMRANGEBYSCORE', slots, '-inf', now)
    if redis.call('ZCARD', slots) >= limit then
      return 'CONCURRENCY_LIMIT'
    end
  end
  if cps_limit >= 0 then
    redis.call('ZREMRANGEBYSCORE', cps, '-inf', now - 1000)
    if redis.call('ZCARD', cps) >= cps_limit then
      return 'CPS_LIMIT'
    end
  end
  return 'OK'
end

for k = 1, required do
  local reason = check(k)
  if reason ~= 'OK' then
    return {reason, k}
  end
end
local taken = 0
local first_denial = nil
for k = required + 1, required + alternatives do
  local reason = check(k)
  if reason == 'OK' then
    taken = k
    break
  end
  first_denial = first_denial or {reason, k}
end
if alternatives > 0 and taken == 0 then
  return first_denial
end

-- The zsets carry no key expiry: every check trims what expired (by score), so a scope
-- keeps at most its live calls plus those ended since its last admission.
local held_slots, held_cps = {}, {}
local function admit(k)
  local slots, cps = KEYS[2 * k], KEYS[2 * k + 1]
  redis.call('ZADD', slots, now + ttl, call_key)
  held_slots[#held_slots + 1] = slots
  if tonumber(ARGV[4 + 2 * k]) >= 0 then
    redis.call('ZADD', cps, now, call_key)
    held_cps[#held_cps + 1] = cps
  end
end
for k = 1, required do
  admit(k)
end
if taken > 0 then
  admit(taken)
end
redis.call('HSET', record, 'slots', table.concat(held_slots, '\n'),
  'cps', table.concat(held_cps, '\n'), 'taken', taken)
redis.call('PEXPIRE', record, ttl)
return {'OK', taken}
