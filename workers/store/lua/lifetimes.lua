-- Library: the fleet's token lifetimes, for /metrics' shortest lifetime. Prepended to the scripts that
-- create, change and delete integrations (create.lua, write.lua, delete.lua), so the tally changes in the
-- same atomic step as the token it counts:
--
--   P metrics:lifetimes  hash  whole seconds a token lives -> how many integrations that are refreshed
--                              (active or retrying) hold a current token living that long
--
-- An integration hash names the lifetime it is counted under (field lifetime), so a change takes it out of
-- exactly that count. A count per lifetime, not an entry per integration: a fleet has few distinct
-- lifetimes, and each integration costs one short field.

-- Count `integration` under `after` (whole seconds as a string; false: under none) instead of where it was.
local function lifetime_tally(tally, integration, after)
  local before = redis.call('HGET', integration, 'lifetime')
  if before == after then return end
  if before and redis.call('HINCRBY', tally, before, -1) <= 0 then redis.call('HDEL', tally, before) end
  if after then
    redis.call('HINCRBY', tally, after, 1)
    redis.call('HSET', integration, 'lifetime', after)
  else
    redis.call('HDEL', integration, 'lifetime')
  end
end

-- The lifetime of a token written with `expires_at` and `updated_at` (strings), or false.
local function lifetime_of(expires_at, issued_at)
  local expires, issued = tonumber(expires_at or ''), tonumber(issued_at or '')
  if not (expires and issued) then return false end
  return tostring(math.max(0, math.floor(expires - issued)))
end
