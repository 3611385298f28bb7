-- Guarded writes: apply each of a batch of changes to its integration if the stored version is the one
-- the work started from. The version is the guard: a write whose lock lapsed (a slow answer, Redis paused) still lands
-- while nobody wrote since, because the provider may already have retired the refresh token it replaces;
-- a newer token (the version moved on) is never overwritten. Everything that belongs to the change
-- (token, status, history, schedule, webhook event, metrics, marks, the attempt journal, the operators'
-- index: see index.lua) happens in this one step.
-- Each is judged on its own; one round trip for a whole batch of refreshes. For each it returns (in order)
-- the new version, -1 (the version moved on and the lock had lapsed: someone else took over),
-- -2 (the version moved on), -3 (the integration is gone or being deleted: nothing may be stored) or -4
-- (the change failed part-way, on a corrupted stored value, say; the others go on).
-- The write records which attempt it applied (``applied``: owner and expected version), so a retry after
-- a lost reply finds its own write and returns the version it made instead of a refusal.
--
-- KEYS[1]  refresh schedule zset   P schedule
-- KEYS[2]  in-flight zset          P inflight
-- KEYS[3]  webhook outbox list     P outbox
-- KEYS[4]  the index's names       P index:names
-- KEYS[5]  the index's cell sizes  P index:cells
-- then four keys for the i-th change (i from 1), at KEYS[5 + 4(i-1) + 1 .. 4]:
--   integration hash P integration:<name>, consumer token hash P token:<name>, history list
--   P history:<name>, refresh lock P lock:<name>
-- ARGV[1]  a JSON array of one object per change, with these named values:
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
--   latest          [[hash, field, time], ...]: a time (a string) that replaces the field's when later, e.g.
--                   the last refresh that worked (metrics)
--   marks           [[key, value, ttl ms], ...]: strings set with the write (e.g. a spent link)
--   started         (optional) when the work began: a token exchange that began before the token it
--                   exchanges was replaced (follow.lua's ``followed``) is due again at once
-- ARGV[2]  the token lifetimes tally  P metrics:lifetimes (see lifetimes.lua)
-- ARGV[3]  prefix of the index's cells   P index:cell:
-- The counters of accepted changes, added up: one HINCRBYFLOAT per field for the batch.
local counted = {}
-- The latest times of accepted changes, per hash and field: one write per field for the batch.
local latest = {}
local lifetimes = ARGV[2]
local ix = {names = KEYS[4], cells = KEYS[5], cell_prefix = ARGV[3]}

local function apply(K, a)
  local current = redis.call('HMGET', K[1], 'version', 'deleting', 'applied', 'index_cell')
  -- A deletion fences the integration first (fence.lua): a refresh still in flight must not store a grant
  -- that the deletion would never revoke.
  if not current[1] or current[2] then return -3 end
  local applied = a.owner .. ':' .. a.version
  -- Our own write, applied before the reply was lost: say what happened.
  if current[3] == applied then return tonumber(current[1]) end
  local holds_lock = redis.call('GET', K[6]) == a.owner
  if current[1] ~= a.version then return holds_lock and -2 or -1 end
  redis.call('HSET', K[1], 'applied', applied)
  -- The attempt journal (see acquire_and_load.lua) ends with the write: ours, or while we hold the lock
  -- whatever was left (a refresh token written now replaces the one it names). Another attempt's entry,
  -- made after our lock lapsed, stays: it is cleared by that attempt's own write or release.
  local journal = redis.call('HGET', K[1], 'attempt')
  if journal and (holds_lock or cjson.decode(journal).owner == a.owner) then redis.call('HDEL', K[1], 'attempt') end
  -- A new access token makes a lost earlier answer moot.
  if a.token.access_token and a.fields.lost_attempt == nil then redis.call('HDEL', K[1], 'lost_attempt') end
  local fields = a.fields
  local old_status = redis.call('HGET', K[1], 'status')
  local same_status = fields['status'] == nil or fields['status'] == old_status
  local flat = {}
  for k, v in pairs(fields) do
    if not (k == 'status_at' and same_status) then flat[#flat + 1] = k; flat[#flat + 1] = v end
  end
  if #flat > 0 then redis.call('HSET', K[1], unpack(flat)) end
  local version = redis.call('HINCRBY', K[1], 'version', 1)
  -- A new status or spec (its provider) moves it to another cell; one stored before the index existed is
  -- filed at its first write.
  if not same_status or fields.spec or not current[4] then index_file(ix, a.name, K[1]) end
  local token = {}
  for k, v in pairs(a.token) do token[#token + 1] = k; token[#token + 1] = v end
  if #token > 0 then redis.call('HSET', K[2], unpack(token)) end
  if not same_status then
    redis.call('LPUSH', K[3], a.history)
    redis.call('LTRIM', K[3], 0, a.history_length - 1)
    if a.outbox then
      -- In the same step as the change itself, so no change is ever missed or announced untrue.
      local entry = cjson.decode(a.history)
      local created = redis.call('HGET', K[1], 'created_at')
      redis.call('RPUSH', K[7], cjson.encode({id = a.name .. ':' .. created .. ':' .. version, name = a.name,
        old_status = old_status, new_status = fields['status'], reason = entry['reason'], at = entry['at']}))
    end
  end
  local due = a.due
  if a.started and due ~= 'keep' and due ~= '' then
    local raw = redis.call('HGET', K[1], 'followed')
    local followed = tonumber(raw or '')
    if followed and followed > a.started and followed < tonumber(due) then
      due = raw
      redis.call('HSET', K[1], 'refresh_at', due)
    end
  end
  if due == 'keep' then
    -- leave the schedule as it is (a change that does not touch tokens)
  elseif due ~= '' then
    redis.call('ZADD', K[4], due, a.name)
    redis.call('ZREM', K[5], a.name)
  else
    redis.call('ZREM', K[4], a.name)
    redis.call('ZREM', K[5], a.name)
  end
  redis.call('PUBLISH', a.channel, version)
  -- Only our own lock: after a lapse it may be another refresh's now.
  if a.release and holds_lock then redis.call('DEL', K[6]) end
  for _, mark in ipairs(a.marks) do
    redis.call('SET', mark[1], mark[2], 'PX', mark[3])
  end
  -- The shortest lifetime must follow the integration (lifetimes.lua): a token with no expiry, or one nobody
  -- refreshes any more (given up, waiting for a person), leaves the fleet's figure.
  local status = fields['status'] or old_status
  if status ~= 'active' and status ~= 'retrying' then
    lifetime_tally(lifetimes, K[1], false)
  elseif a.token.expires_at then
    lifetime_tally(lifetimes, K[1], lifetime_of(a.token.expires_at, a.token.updated_at))
  end
  -- Counted once the change is whole (a failure above leaves its counters out).
  for _, counter in ipairs(a.counters) do
    local per_key = counted[counter[1]] or {}
    counted[counter[1]] = per_key
    per_key[counter[2]] = (per_key[counter[2]] or 0) + counter[3]
  end
  for _, entry in ipairs(a.latest) do
    local per_key = latest[entry[1]] or {}
    latest[entry[1]] = per_key
    if not per_key[entry[2]] or tonumber(entry[3]) > tonumber(per_key[entry[2]]) then per_key[entry[2]] = entry[3] end
  end
  return version
end

local results = {}
for i, a in ipairs(cjson.decode(ARGV[1])) do
  local base = 5 + 4 * (i - 1)
  local ok, version = pcall(apply,
    {KEYS[base + 1], KEYS[base + 2], KEYS[base + 3], KEYS[1], KEYS[2], KEYS[base + 4], KEYS[3]}, a)
  results[i] = ok and version or -4
end
for key, per_key in pairs(counted) do
  for field, amount in pairs(per_key) do redis.call('HINCRBYFLOAT', key, field, amount) end
end
for key, per_key in pairs(latest) do
  for field, at in pairs(per_key) do
    local stored = tonumber(redis.call('HGET', key, field) or '')
    if not stored or tonumber(at) > stored then redis.call('HSET', key, field, at) end
  end
end
return results
