-- bundle_load: write a period's bundle balance from SQL, keeping its live reservations.
-- KEYS[1] bundle hash   KEYS[2] bundle calls hash
-- ARGV[1] allowance (seconds)   ARGV[2] used (seconds, from the rated calls)
-- ARGV[3] '1': overwrite, '0': only if not loaded   ARGV[4] state ttl (s)
-- The reserved total is recomputed from the live reservations.
-- Returns {written (1/0), allowance, used, reserved}: the balance now in force.
local bundle, calls = KEYS[1], KEYS[2]

if ARGV[3] == '0' and redis.call('HEXISTS', bundle, 'allowance') == 1 then
  local f = redis.call('HMGET', bundle, 'allowance', 'used', 'reserved')
  return {0, tonumber(f[1]), tonumber(f[2] or '0'), tonumber(f[3] or '0')}
end
local reserved = 0
for _, held in ipairs(redis.call('HVALS', calls)) do
  reserved = reserved + tonumber(held)
end
redis.call('HSET', bundle, 'allowance', ARGV[1], 'used', ARGV[2], 'reserved', reserved)
redis.call('EXPIRE', bundle, ARGV[4])
return {1, tonumber(ARGV[1]), tonumber(ARGV[2]), reserved}
