-- credit: add a top-up to the hot balance once per idempotency key.
-- KEYS[1] account hash   KEYS[2] credited marker
-- ARGV[1] amount (micro-units, integer >= 0)   ARGV[2] marker ttl (s)
-- Returns 1 when applied, 0 when the key was already applied, -1 when the account has no
-- hot state (the marker is kept: its next load from SQL includes this top-up).
local account, marker = KEYS[1], KEYS[2]

if not redis.call('SET', marker, '1', 'NX', 'EX', ARGV[2]) then
  return 0
end
if redis.call('EXISTS', account) == 0 then
  return -1
end
redis.call('HINCRBY', account, 'balance', ARGV[1])
return 1
