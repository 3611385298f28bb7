-- Integrations that exchange a token just refreshed are due now (RFC 8693 subject_integration): their
-- plan and their schedule entry both say so, so the scheduled refresh is not taken for a stale one.
-- Only those that are active or retrying: one waiting for a person, or given up, stays as it is.
-- Returns how many were moved.
--
-- KEYS[1]      schedule sorted set          P schedule
-- KEYS[2..n]   each dependent's hash        P integration:<name>
-- ARGV[1]      now (the shared clock)
-- ARGV[2..n]   each dependent's name
local moved = 0
for i = 2, #KEYS do
  local status = redis.call('HGET', KEYS[i], 'status')
  if (status == 'active' or status == 'retrying') and redis.call('HEXISTS', KEYS[i], 'deleting') == 0 then
    redis.call('HSET', KEYS[i], 'refresh_at', ARGV[1])
    redis.call('ZADD', KEYS[1], ARGV[1], ARGV[i])
    moved = moved + 1
  end
end
return moved
