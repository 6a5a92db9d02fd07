-- load: write an account's hot state from SQL, keeping its live reservations.
-- KEYS[1] account hash   KEYS[2] calls hash
-- ARGV[1] status   ARGV[2] balance   ARGV[3] credit_limit   ARGV[4] concurrency_limit (-1: none)
-- The reserved total is recomputed from the live calls. Returns the reserved total.
local account, calls = KEYS[1], KEYS[2]

local reserved = 0
for _, held in ipairs(redis.call('HVALS', calls)) do
  reserved = reserved + tonumber(held)
end
redis.call('HSET', account,
  'status', ARGV[1], 'balance', ARGV[2], 'credit_limit', ARGV[3],
  'concurrency_limit', ARGV[4], 'reserved', reserved)
return reserved
