-- A guarded write: apply one change to an integration if the stored version is the one the work started
-- from. The version is the guard: a write whose lock lapsed (a slow answer, Redis paused) still lands
-- while nobody wrote since, because the provider may already have retired the refresh token it replaces;
-- a newer token (the version moved on) is never overwritten. Everything that belongs to the change
-- (token, status, history, schedule, webhook event, metrics, marks, the attempt journal) happens in this
-- one step.
-- Returns the new version, -1 (the version moved on and the lock had lapsed: someone else took over),
-- -2 (the version moved on) or -3 (the integration is gone or being deleted: nothing may be stored).
-- The write records which attempt it applied (``applied``: owner and expected version), so a retry after
-- a lost reply finds its own write and returns the version it made instead of a refusal.
--
-- KEYS[1]  integration hash        P integration:<name>
-- KEYS[2]  consumer token hash     P token:<name>
-- KEYS[3]  history list            P history:<name>
-- KEYS[4]  refresh schedule zset   P schedule
-- KEYS[5]  in-flight zset          P inflight
-- KEYS[6]  refresh lock            P lock:<name>
-- KEYS[7]  webhook outbox list     P outbox
-- ARGV[1]  one JSON object with these named values:
--   owner           the lock owner token the write must still hold
--   version         the expected stored version (a string, as HGET returns it)
--   name            the integration's name
--   fields          integration fields to set (object of strings; status_at only kept when the status changes)
--   token           consumer token fields to set (object of strings, may be empty)
--   history         the history entry, a JSON string {at, status, reason}, pushed when the status changes
--   due             next planned refresh (a score), '' to unschedule, 'keep' to leave the schedule alone
--   channel         the pub/sub channel the new version is announced on
--   history_length  how many history entries are kept
--   release         true: drop the lock in the same step
--   outbox          true: record a status change in the outbox for the webhook
--   counters        [[hash, field, amount], ...]: metrics added with the write
--   marks           [[key, value, ttl ms], ...]: strings set with the write (e.g. a spent link)
local a = cjson.decode(ARGV[1])
local current = redis.call('HMGET', KEYS[1], 'version', 'deleting', 'applied')
-- A deletion fences the integration first (fence.lua): a refresh still in flight must not store a grant
-- that the deletion would never revoke.
if not current[1] or current[2] then return -3 end
local applied = a.owner .. ':' .. a.version
-- Our own write, applied before the reply was lost: say what happened.
if current[3] == applied then return tonumber(current[1]) end
local holds_lock = redis.call('GET', KEYS[6]) == a.owner
if current[1] ~= a.version then return holds_lock and -2 or -1 end
redis.call('HSET', KEYS[1], 'applied', applied)
-- The attempt journal (see acquire_and_load.lua) ends with the write: ours, or while we hold the lock
-- whatever was left (a refresh token written now replaces the one it names). Another attempt's entry,
-- made after our lock lapsed, stays: it is cleared by that attempt's own write or release.
local journal = redis.call('HGET', KEYS[1], 'attempt')
if journal and (holds_lock or cjson.decode(journal).owner == a.owner) then redis.call('HDEL', KEYS[1], 'attempt') end
-- A new access token makes a lost earlier answer moot.
if a.token.access_token and a.fields.lost_attempt == nil then redis.call('HDEL', KEYS[1], 'lost_attempt') end
local fields = a.fields
local old_status = redis.call('HGET', KEYS[1], 'status')
local same_status = fields['status'] == nil or fields['status'] == old_status
local flat = {}
for k, v in pairs(fields) do
  if not (k == 'status_at' and same_status) then flat[#flat + 1] = k; flat[#flat + 1] = v end
end
if #flat > 0 then redis.call('HSET', KEYS[1], unpack(flat)) end
local version = redis.call('HINCRBY', KEYS[1], 'version', 1)
local token = {}
for k, v in pairs(a.token) do token[#token + 1] = k; token[#token + 1] = v end
if #token > 0 then redis.call('HSET', KEYS[2], unpack(token)) end
if not same_status then
  redis.call('LPUSH', KEYS[3], a.history)
  redis.call('LTRIM', KEYS[3], 0, a.history_length - 1)
  if a.outbox then
    -- In the same step as the change itself, so no change is ever missed or announced untrue.
    local entry = cjson.decode(a.history)
    local created = redis.call('HGET', KEYS[1], 'created_at')
    redis.call('RPUSH', KEYS[7], cjson.encode({id = a.name .. ':' .. created .. ':' .. version, name = a.name,
      old_status = old_status, new_status = fields['status'], reason = entry['reason'], at = entry['at']}))
  end
end
if a.due == 'keep' then
  -- leave the schedule as it is (a change that does not touch tokens)
elseif a.due ~= '' then
  redis.call('ZADD', KEYS[4], a.due, a.name)
  redis.call('ZREM', KEYS[5], a.name)
else
  redis.call('ZREM', KEYS[4], a.name)
  redis.call('ZREM', KEYS[5], a.name)
end
redis.call('PUBLISH', a.channel, version)
-- Only our own lock: after a lapse it may be another refresh's now.
if a.release and holds_lock then redis.call('DEL', KEYS[6]) end
for _, counter in ipairs(a.counters) do
  redis.call('HINCRBYFLOAT', counter[1], counter[2], counter[3])
end
for _, mark in ipairs(a.marks) do
  redis.call('SET', mark[1], mark[2], 'PX', mark[3])
end
return version
