-- Claim the refreshes due within the horizon: move them from the schedule to in-flight, first taking
-- back refreshes queued earlier that were presumed lost. Under a rate cap, starts at one token endpoint
-- host are spaced out; the cap yields to a refresh's deadline (its token's expiry minus the margin):
-- it spreads early work and never makes a token expire. A refresh the cap puts past the horizon stays
-- in the schedule under the time it may start (its plan stays in the integration's refresh_at).
-- Returns name, plan, start, name, plan, start, ...: start is when the refresh may go out.
-- (The integration and token hashes are read by name: fine on one Redis, not on a cluster.)
--
-- KEYS[1]  refresh schedule zset        P schedule     (name -> when it may start; its plan until capped)
-- KEYS[2]  in-flight zset               P inflight     (name -> time after which it is presumed lost)
-- KEYS[3]  the caps' next free starts   P rate_slots   (host -> unix seconds)
-- KEYS[4]  refreshes let through at their deadline although the cap was booked   P metrics:cap_yielded
-- ARGV[1]  now (unix seconds)
-- ARGV[2]  horizon end: claim what may start before this
-- ARGV[3]  lost after: seconds after its start a queued refresh is presumed lost
-- ARGV[4]  most refreshes claimed at once
-- ARGV[5]  prefix of the integration hashes   P integration:   (refresh_at, rate_host, rate_cap)
-- ARGV[6]  seconds between refreshes at one host, unless the integration has its own rate_cap (0 = no cap)
-- ARGV[7]  prefix of the token hashes         P token:         (expires_at)
-- ARGV[8]  margin: a refresh's deadline is this long before its token expires
local now = tonumber(ARGV[1])
local horizon_end = tonumber(ARGV[2])
local lost_after = tonumber(ARGV[3])
local limit = tonumber(ARGV[4])
local default_gap = tonumber(ARGV[6])
local margin = tonumber(ARGV[8])

local lost = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, limit)
for _, name in ipairs(lost) do
  redis.call('ZREM', KEYS[2], name)
  -- Back under the plan stored with the integration, so the refresh queued now
  -- matches it; a deleted or stopped integration has none and is dropped.
  local plan = redis.call('HGET', ARGV[5] .. name, 'refresh_at')
  if plan and plan ~= '' then redis.call('ZADD', KEYS[1], 'NX', plan, name) end
end

local slots, touched = {}, {}
local function slot_of(host)
  if slots[host] == nil then
    slots[host] = tonumber(redis.call('HGET', KEYS[3], host) or '0') or 0
  end
  return slots[host]
end

local claimed = {}
local count, examined = 0, 0
-- Each page leaves the range (claimed, or put past the horizon), so the next page is new work; the
-- bound keeps one call short when a capped host's backlog is long.
while count < limit and examined < limit * 10 do
  local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'WITHSCORES', 'LIMIT', 0, limit - count)
  if #due == 0 then break end
  for i = 1, #due, 2 do
    local name = due[i]
    examined = examined + 1
    local info = redis.call('HMGET', ARGV[5] .. name, 'refresh_at', 'rate_host', 'rate_cap')
    local plan = (info[1] and info[1] ~= '') and info[1] or due[i + 1]
    local host = info[2] or ''
    local gap = default_gap
    local own = tonumber(info[3] or '')
    if own and own > 0 then gap = 1 / own end
    local start = math.max(tonumber(due[i + 1]), now)
    local booked = false
    if gap > 0 then
      local slot = slot_of(host)
      if slot > start then
        local expires = tonumber(redis.call('HGET', ARGV[7] .. name, 'expires_at') or '')
        local deadline = expires and math.max(expires - margin, start) or nil
        if deadline and slot > deadline then
          -- The cap yields: this refresh goes at its deadline without taking a slot.
          start = deadline
          if start <= horizon_end + 1e-6 then redis.call('HINCRBY', KEYS[4], host, 1) end
        else
          start = slot
          booked = true
        end
      else
        booked = true
      end
    end
    if start > horizon_end + 1e-6 then
      redis.call('ZADD', KEYS[1], string.format('%.6f', start), name)
    else
      if booked then
        slots[host] = start + gap
        touched[host] = true
      end
      redis.call('ZREM', KEYS[1], name)
      -- Lost counts from when it can run: an overdue refresh gets its full grace from then.
      redis.call('ZADD', KEYS[2], start + lost_after, name)
      claimed[#claimed + 1] = name
      claimed[#claimed + 1] = plan
      claimed[#claimed + 1] = string.format('%.6f', start)
      count = count + 1
    end
  end
end
for host in pairs(touched) do
  redis.call('HSET', KEYS[3], host, string.format('%.6f', slots[host]))
end
return claimed
