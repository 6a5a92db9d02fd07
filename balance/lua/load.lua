-- load: write an account's hot state from SQL, keeping its live reservations.
-- KEYS[1] account hash   KEYS[2] calls hash
-- ARGV[1] status   ARGV[2] balance   ARGV[3] credit_limit   ARGV[4] concurrency_limit (-1: none)
-- ARGV[5] trial_ends (ms since the epoch, -1: not in trial)   ARGV[6] cps_limit (-1: none)
-- ARGV[7] seat_limit (-1: none)   ARGV[8] suspend_cut ('1': a suspension cuts live calls)
-- The reserved total is recomputed from the live calls. Returns the reserved total.
local account, calls = KEYS[1], KEYS[2]

local reserved = 0
for _, held in ipairs(redis.call('HVALS', calls)) do
  reserved = reserved + tonumber(held)
end
redis.call('HSET', account,
  'status', ARGV[1], 'balance', ARGV[2], 'credit_limit', ARGV[3],
  'concurrency_limit', ARGV[4], 'reserved', reserved,
  'trial_ends', ARGV[5] or '-1', 'cps_limit', ARGV[6] or '-1',
  'seat_limit', ARGV[7] or '-1', 'suspend_cut', ARGV[8] or '1')
return reserved
