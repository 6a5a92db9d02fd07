-- seat_list: one consistent read of a tenant's seats.
-- KEYS[1] seats hash (seat -> "<switch_id>|<since_us>")   KEYS[2] seat holds zset
-- ARGV[1] 1 to list the live seats, 0 to count only
-- Returns {live_seats, unexpired_holds, seat, entry, seat, entry, ...}.
local seats, holds = KEYS[1], KEYS[2]

local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local reply = {redis.call('HLEN', seats), redis.call('ZCOUNT', holds, '(' .. now, '+inf')}
if ARGV[1] == '1' then
  local flat = redis.call('HGETALL', seats)
  for i = 1, #flat do
    reply[#reply + 1] = flat[i]
  end
end
return reply
