-- has_call: whether a call holds an unexpired lease.
-- KEYS[1] leases zset
-- ARGV[1] call_key
-- Returns 1 or 0.
local expiry = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not expiry then
  return 0
end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
if tonumber(expiry) > now then
  return 1
end
return 0
