-- reserved: the micro-units one call holds (0 when it holds no reservation).
-- KEYS[1] calls hash
-- ARGV[1] call_key
-- Returns an integer.
return tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
