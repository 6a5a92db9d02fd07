-- seat_logout: a seat went away; drop it and any hold it has.
-- KEYS[1] seats hash (seat -> "<switch_id>|<since_us>")   KEYS[2] seat holds zset
-- ARGV[1] seat   ARGV[2] switch_id ('' = any)   ARGV[3] logout time in us (-1 = any)
-- A seat live on another switch, or live since after the logout (a stale, replayed
-- logout), is kept. Returns 1 when the seat was live and is removed, 0 when it was not
-- live, -1 when it is live and kept.
local seats, holds = KEYS[1], KEYS[2]
local seat, switch_id = ARGV[1], ARGV[2]
local at = tonumber(ARGV[3])

redis.call('ZREM', holds, seat)
local entry = redis.call('HGET', seats, seat)
if not entry then
  return 0
end
local cut = 0
for i = #entry, 1, -1 do
  if string.sub(entry, i, i) == '|' then
    cut = i
    break
  end
end
local holder = string.sub(entry, 1, cut - 1)
local since = tonumber(string.sub(entry, cut + 1))
if (switch_id ~= '' and holder ~= switch_id) or (at >= 0 and since ~= nil and since > at) then
  return -1
end
redis.call('HDEL', seats, seat)
return 1
