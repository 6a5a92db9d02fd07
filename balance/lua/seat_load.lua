-- seat_load: write a tenant's live seats from SQL (daemon start).
-- KEYS[1] seats hash (seat -> "<switch_id>|<since_us>")   KEYS[2] seat holds zset
-- ARGV[1] 1 to replace every live seat, 0 to add to them
-- ARGV[2..] seat, entry, seat, entry, ...
-- A loaded seat's hold is dropped (a seat is never live and held). Returns the live count.
local seats, holds = KEYS[1], KEYS[2]

if ARGV[1] == '1' then
  redis.call('DEL', seats)
end
for i = 2, #ARGV - 1, 2 do
  redis.call('HSET', seats, ARGV[i], ARGV[i + 1])
  redis.call('ZREM', holds, ARGV[i])
end
return redis.call('HLEN', seats)
