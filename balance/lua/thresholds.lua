-- thresholds: fire each low-balance rule once per crossing (balance.thresholds).
-- KEYS[1] rk:{<account>}:thresholds  hash  rule key -> "1" while the rule has fired
-- ARGV    pairs: rule key, state ("1" reached, "0" not reached: re-arm, "?" unknown: keep)
-- Returns the rule keys that fired by this call. Fields of rules no longer passed are removed.
local key = KEYS[1]
local wanted = {}
local fired = {}
for i = 1, #ARGV, 2 do
  local rule, state = ARGV[i], ARGV[i + 1]
  wanted[rule] = true
  if state == '1' then
    if redis.call('HSETNX', key, rule, '1') == 1 then
      fired[#fired + 1] = rule
    end
  elseif state == '0' then
    redis.call('HDEL', key, rule)
  end
end
for _, field in ipairs(redis.call('HKEYS', key)) do
  if not wanted[field] then
    redis.call('HDEL', key, field)
  end
end
return fired
