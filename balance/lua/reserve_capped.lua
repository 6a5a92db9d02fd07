-- reserve_capped: a call's shared caps (caps.lua) and its account's reserve (reserve.lua)
-- in ONE script, for a single Redis server: its keys span the account's hash slot and
-- the {caps} slot, which one script may only do outside Redis Cluster.
-- KEYS[1..4] reserve's keys (account, calls, leases, cps), then caps' keys (the call's
-- record, two per scope).   ARGV[1..3] reserve's arguments (call_key, amount micros,
-- lease ttl ms), then caps' arguments (call_key, slot ttl ms, R, A, two limits per scope).
-- The shared caps first: their denial reserves nothing. A denial of the reserve gives
-- the shared slots and CPS admissions back (caps_release with refund).
-- Returns reserve's reply, then caps': {reason, reserved, available, live, caps_reason,
-- caps_index}; reason is the shared caps' own when they denied the call.
--@include caps
--@include caps_release
--@include reserve

local function slice(list, first, last)
  local part = {}
  for i = first, last do
    part[#part + 1] = list[i]
  end
  return part
end

local admitted = caps(slice(KEYS, 5, #KEYS), slice(ARGV, 4, #ARGV))
if admitted[1] ~= 'OK' then
  return {admitted[1], 0, 0, 0, admitted[1], admitted[2]}
end
local reply = reserve(slice(KEYS, 1, 4), slice(ARGV, 1, 3))
if reply[1] ~= 'OK' then
  caps_release({KEYS[5]}, {ARGV[4], '1'})
end
reply[5], reply[6] = admitted[1], admitted[2]
return reply
