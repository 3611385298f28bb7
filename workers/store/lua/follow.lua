-- Integrations that exchange a token just refreshed are due now (RFC 8693 subject_integration): their
-- plan and their schedule entry both say so, so the scheduled refresh is not taken for a stale one.
-- Only those that are active or retrying: one waiting for a person, or given up, stays as it is.
-- ``followed`` records when, so an exchange already under way with the old token is due again once it
-- is written (write.lua). Never sooner than the minimum interval after a dependent's last refresh: two
-- integrations exchanging each other's tokens (a loop two updates made at once) cannot spin.
-- Returns how many were moved.
--
-- KEYS[1]      schedule sorted set          P schedule
-- KEYS[2..n]   each dependent's hash        P integration:<name>
-- ARGV[1]      now (the shared clock)
-- ARGV[2]      the minimum interval between two refreshes of one integration, seconds
-- ARGV[3..n+1] each dependent's name
local now, gap = tonumber(ARGV[1]), tonumber(ARGV[2])
local moved = 0
for i = 2, #KEYS do
  local info = redis.call('HMGET', KEYS[i], 'status', 'deleting', 'refreshed_at')
  if (info[1] == 'active' or info[1] == 'retrying') and not info[2] then
    local due = math.max(now, (tonumber(info[3]) or 0) + gap)
    redis.call('HSET', KEYS[i], 'refresh_at', tostring(due), 'followed', ARGV[1])
    redis.call('ZADD', KEYS[1], due, ARGV[i + 1])
    moved = moved + 1
  end
end
return moved
