-- Claim the refreshes due within the horizon: move them from the schedule to in-flight, first taking
-- back refreshes queued earlier that were presumed lost. Under a rate cap, starts at one token endpoint
-- host are spaced out, in two queues of slots: early work (a token with time left before its deadline,
-- its expiry minus the margin) books the host's slots, and yields to its deadline when they are booked
-- past it, so the cap never makes a token expire; overdue work (past its deadline: a backlog after an
-- outage, retries) is spaced at the same rate on slots of its own, never behind early work. Early work
-- booked past the horizon stays in the schedule under its booked start (its plan stays in the
-- integration's refresh_at, the booking in its rate_booked).
-- Returns name, plan, start, name, plan, start, ...: start is when the refresh may go out; then 'more'
-- if the call stopped at its bound with work perhaps still due.
-- (The integration and token hashes are read by name: fine on one Redis, not on a cluster.)
--
-- KEYS[1]  refresh schedule zset        P schedule     (name -> when it may start; its plan until capped)
-- KEYS[2]  in-flight zset               P inflight     (name -> time after which it is presumed lost)
-- KEYS[3]  the caps' next free starts   P rate_slots   (host -> unix seconds; "!host" for overdue work)
-- KEYS[4]  refreshes let through at their deadline although the cap was booked   P metrics:cap_yielded
-- ARGV[1]  now (unix seconds)
-- ARGV[2]  horizon end: claim what may start before this
-- ARGV[3]  lost after: seconds after its start a queued refresh is presumed lost
-- ARGV[4]  most refreshes claimed at once
-- ARGV[5]  prefix of the integration hashes   P integration:   (refresh_at, rate_host, rate_cap, rate_booked)
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
local function slot_of(bucket)
  if slots[bucket] == nil then
    slots[bucket] = tonumber(redis.call('HGET', KEYS[3], bucket) or '0') or 0
  end
  return slots[bucket]
end
local function take(bucket, start, gap)
  slots[bucket] = start + gap
  touched[bucket] = true
end
local function fmt(t) return string.format('%.6f', t) end

local claimed = {}
local count, examined = 0, 0
-- Each page leaves the range (claimed, or booked past the horizon), so the next page is new work;
-- the bound keeps one call short whatever the backlog.
while count < limit and examined < limit * 10 do
  local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'WITHSCORES', 'LIMIT', 0, limit - count)
  if #due == 0 then break end
  for i = 1, #due, 2 do
    local name, score = due[i], tonumber(due[i + 1])
    examined = examined + 1
    local key = ARGV[5] .. name
    local info = redis.call('HMGET', key, 'refresh_at', 'rate_host', 'rate_cap', 'rate_booked')
    local plan = (info[1] and info[1] ~= '') and info[1] or due[i + 1]
    local host = info[2] or ''
    local gap = default_gap
    local own = tonumber(info[3] or '')
    if own and own > 0 then gap = 1 / own end
    local start = math.max(score, now)
    local booked_at = nil
    if gap > 0 and info[4] and info[4] ~= '' and tonumber(info[4]) == score then
      -- Booked on an earlier tick: the slot is already its own.
    elseif gap > 0 then
      local expires = tonumber(redis.call('HGET', ARGV[7] .. name, 'expires_at') or '')
      local deadline = expires and (expires - margin) or nil
      if deadline and deadline <= now then
        -- Overdue: spaced among the overdue, never behind early work.
        start = math.max(start, slot_of('!' .. host))
        if start <= horizon_end + 1e-6 then take('!' .. host, start, gap) end
      else
        local slot = slot_of(host)
        if slot <= start then
          take(host, start, gap)
        elseif deadline and slot > math.max(deadline, start) then
          -- The cap yields: this refresh goes at its deadline without taking a slot.
          start = math.max(deadline, start)
          if start <= horizon_end + 1e-6 then redis.call('HINCRBY', KEYS[4], host, 1) end
        else
          start = slot
          if start <= horizon_end + 1e-6 then
            take(host, start, gap)
          elseif info[1] then
            -- Booked now, claimed when it comes within the horizon (an integration with no hash, one
            -- deleted under its schedule entry, books nothing: it is dropped when claimed).
            take(host, start, gap)
            booked_at = start
          end
        end
      end
    end
    if start > horizon_end + 1e-6 then
      -- Not yet: back under the time it may start; a booking is remembered with the integration.
      redis.call('ZADD', KEYS[1], fmt(start), name)
      if booked_at then redis.call('HSET', key, 'rate_booked', fmt(booked_at)) end
    else
      if info[4] and info[4] ~= '' then redis.call('HDEL', key, 'rate_booked') end
      redis.call('ZREM', KEYS[1], name)
      -- Lost counts from when it can run: an overdue refresh gets its full grace from then.
      redis.call('ZADD', KEYS[2], start + lost_after, name)
      claimed[#claimed + 1] = name
      claimed[#claimed + 1] = plan
      claimed[#claimed + 1] = fmt(start)
      count = count + 1
    end
  end
end
for bucket in pairs(touched) do
  redis.call('HSET', KEYS[3], bucket, fmt(slots[bucket]))
end
-- One more element: the bound stopped this call while work may still be due.
if count < limit and examined >= limit * 10 then claimed[#claimed + 1] = 'more' end
return claimed
