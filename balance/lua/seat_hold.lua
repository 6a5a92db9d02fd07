-- seat_hold: the pre-login ask; keep a seat for a login to come if the tenant has room.
-- KEYS[1] seats hash (seat -> "<switch_id>|<since_us>")   KEYS[2] seat holds zset
-- ARGV[1] seat   ARGV[2] seat limit (-1 = unlimited)   ARGV[3] hold ttl (ms)
-- A seat already live or held is OK (a held seat's hold is renewed). Otherwise the live
-- seats and the unexpired holds of other seats are counted: at the limit, SEAT_LIMIT
-- and nothing is held. Returns {reason, live_seats}.
local seats, holds = KEYS[1], KEYS[2]
local seat = ARGV[1]
local limit = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])

local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', holds, '-inf', now)

local live = redis.call('HLEN', seats)
if redis.call('HEXISTS', seats, seat) == 1 then
  return {'OK', live}
end
if not redis.call('ZSCORE', holds, seat) then
  if limit >= 0 and live + redis.call('ZCARD', holds) >= limit then
    return {'SEAT_LIMIT', live}
  end
end
redis.call('ZADD', holds, now + ttl, seat)
-- the zset lives as long as its latest hold (holds of other ttls may be longer)
local last = redis.call('ZRANGE', holds, -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', holds, tonumber(last[2]) + 1)
return {'OK', live}
