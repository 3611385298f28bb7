-- One round trip for the start of a batch of refreshes: for each integration take the lock, read the
-- integration, and record the attempt in its journal (field `attempt`: JSON {owner, since, until, fp}:
-- "refresh in flight with the refresh token whose fingerprint is fp since `since`"). The attempt's write
-- or release clears it, so an entry found here was left by an attempt that neither wrote nor released: it
-- died (or stalled past its lock) after perhaps sending its refresh token. That evidence is kept in
-- `lost_attempt` ({fp, since}; the earliest one) until a new access token is written.
-- Run again with the same owner tokens (a retry after a lost reply), a lock that is already ours counts as
-- taken and our own journal entry is not taken for a dead attempt's.
-- Returns, for each integration in order, 1 or 0 (lock taken or not) and the integration hash as it was
-- before this step, either way: {taken1, hash1, taken2, hash2, ...}; -1 and the error's text where the step
-- failed for that integration (a corrupted journal entry, say): its lock is not kept, the others go on.
--
-- KEYS[2i-1]  refresh lock of the i-th integration       P lock:<name>
-- KEYS[2i]    integration hash of the i-th integration   P integration:<name>
-- ARGV[1]     lock time to live, ms
-- ARGV[2]     now (unix seconds)
-- ARGV[i+2]   owner token of the i-th lock
local ttl, since = ARGV[1], tonumber(ARGV[2])
local journal_until = since + tonumber(ttl) / 1000

local function start(lock, integration, owner)
  local taken = redis.call('SET', lock, owner, 'NX', 'PX', ttl)
  local retried = false
  if not taken and redis.call('GET', lock) == owner then
    taken, retried = true, true
    redis.call('PEXPIRE', lock, ttl)
  end
  local raw = redis.call('HGETALL', integration)
  if taken and #raw > 0 then
    local previous = redis.call('HGET', integration, 'attempt')
    local ours = previous and cjson.decode(previous).owner == owner
    if ours and retried then
      -- The hash as it was before our first try: without the entry that try made.
      for i = 1, #raw, 2 do
        if raw[i] == 'attempt' then table.remove(raw, i); table.remove(raw, i); break end
      end
    elseif previous then
      local left = cjson.decode(previous)
      redis.call('HSETNX', integration, 'lost_attempt', cjson.encode({fp = left.fp, since = left.since}))
    end
    redis.call('HSET', integration, 'attempt', cjson.encode({owner = owner, since = since,
      ['until'] = journal_until, fp = redis.call('HGET', integration, 'refresh_fp') or ''}))
  end
  return taken and 1 or 0, raw
end

local results = {}
for i = 1, #KEYS / 2 do
  local lock, integration, owner = KEYS[2 * i - 1], KEYS[2 * i], ARGV[i + 2]
  local ok, taken, raw = pcall(start, lock, integration, owner)
  if not ok then
    if redis.call('GET', lock) == owner then redis.call('DEL', lock) end
    taken, raw = -1, tostring(taken)
  end
  results[2 * i - 1] = taken
  results[2 * i] = raw
end
return results
