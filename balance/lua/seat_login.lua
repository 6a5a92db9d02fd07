-- seat_login: a seat became live; admit it unless the tenant is at its seat limit.
-- KEYS[1] seats hash (seat -> "<switch_id>|<since_us>")   KEYS[2] seat holds zset
-- ARGV[1] seat   ARGV[2] "<switch_id>|<since_us>"   ARGV[3] seat limit (-1 = unlimited)
-- A seat already live is ALREADY (counted once, its entry unchanged). A seat holding an
-- unexpired hold converts it (always OK: its place was counted when the hold was made).
-- Otherwise the live seats and the unexpired holds are counted: at the limit SEAT_LIMIT
-- and the seat is NOT added. Returns {reason, live_seats}.
local seats, holds = KEYS[1], KEYS[2]
local seat = ARGV[1]
local limit = tonumber(ARGV[3])

local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', holds, '-inf', now)

if redis.call('HEXISTS', seats, seat) == 1 then
  return {'ALREADY', redis.call('HLEN', seats)}
end
if redis.call('ZREM', holds, seat) == 0 then
  if limit >= 0 and redis.call('HLEN', seats) + redis.call('ZCARD', holds) >= limit then
    return {'SEAT_LIMIT', redis.call('HLEN', seats)}
  end
end
redis.call('HSET', seats, seat, ARGV[2])
return {'OK', redis.call('HLEN', seats)}
