-- Claim the refreshes due within the horizon: move them from the schedule to in-flight, first taking
-- back refreshes queued earlier that were presumed lost. With a rate cap, starts are spaced out.
-- Returns name, plan, start, name, plan, start, ...: start is when the refresh may go out, the plan
-- pushed back as far as the rate cap needs.
-- (The integration hashes are read by name: fine on one Redis, not on a cluster.)
--
-- KEYS[1]  refresh schedule zset        P schedule   (name -> planned refresh time)
-- KEYS[2]  in-flight zset               P inflight   (name -> time after which it is presumed lost)
-- KEYS[3]  the rate cap's next slot     P rate_slot
-- ARGV[1]  now (unix seconds)
-- ARGV[2]  horizon end: claim what is planned before this
-- ARGV[3]  lost after: seconds after its start a queued refresh is presumed lost
-- ARGV[4]  most refreshes claimed at once
-- ARGV[5]  prefix of the integration hashes   P integration:
-- ARGV[6]  seconds between refreshes (0 = no cap)
local now = tonumber(ARGV[1])
local horizon_end = tonumber(ARGV[2])
local gap = tonumber(ARGV[6])
local lost = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[4]))
for _, name in ipairs(lost) do
  redis.call('ZREM', KEYS[2], name)
  -- Back under the plan stored with the integration, so the refresh queued now
  -- matches it; a deleted or stopped integration has none and is dropped.
  local plan = redis.call('HGET', ARGV[5] .. name, 'refresh_at')
  if plan and plan ~= '' then redis.call('ZADD', KEYS[1], 'NX', plan, name) end
end
local slot = tonumber(redis.call('GET', KEYS[3]) or '0')
if slot < now then slot = now end
local limit = tonumber(ARGV[4])
if gap > 0 then
  -- Claim no more than the cap lets start within the horizon; the rest wait in the schedule.
  limit = math.min(limit, math.floor((horizon_end - slot) / gap + 1e-6) + 1)
  if limit <= 0 then return {} end
end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'WITHSCORES', 'LIMIT', 0, limit)
local claimed = {}
for i = 1, #due, 2 do
  local plan = tonumber(due[i + 1])
  local start = plan
  if gap > 0 then
    if slot > start then start = slot end
    slot = start + gap
  end
  if start < now then start = now end
  redis.call('ZREM', KEYS[1], due[i])
  -- Lost counts from when it can run: an overdue refresh gets its full grace from then.
  redis.call('ZADD', KEYS[2], start + tonumber(ARGV[3]), due[i])
  claimed[#claimed + 1] = due[i]
  claimed[#claimed + 1] = due[i + 1]
  claimed[#claimed + 1] = string.format('%.6f', start)
end
if gap > 0 then redis.call('SET', KEYS[3], string.format('%.6f', slot), 'EX', 3600) end
return claimed
