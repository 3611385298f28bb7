-- One round trip for the start of a batch of refreshes: for each integration take the lock, read the
-- integration, and record the attempt in its journal (field `attempt`: JSON {owner, since, until, fp}:
-- "refresh in flight with the refresh token whose fingerprint is fp since `since`"). The attempt's write
-- or release clears it, so an entry found here was left by an attempt that neither wrote nor released: it
-- died (or stalled past its lock) after perhaps sending its refresh token. That evidence is kept in
-- `lost_attempt` ({fp, since}; the earliest one) until a new access token is written.
-- Returns, for each integration in order, 1 or 0 (lock taken or not) and the integration hash as it was
-- before this step, either way: {taken1, hash1, taken2, hash2, ...}.
--
-- KEYS[2i-1]  refresh lock of the i-th integration       P lock:<name>
-- KEYS[2i]    integration hash of the i-th integration   P integration:<name>
-- ARGV[1]     lock time to live, ms
-- ARGV[2]     now (unix seconds)
-- ARGV[i+2]   owner token of the i-th lock
local ttl, since = ARGV[1], tonumber(ARGV[2])
local journal_until = since + tonumber(ttl) / 1000
local results = {}
for i = 1, #KEYS / 2 do
  local lock, integration, owner = KEYS[2 * i - 1], KEYS[2 * i], ARGV[i + 2]
  local taken = redis.call('SET', lock, owner, 'NX', 'PX', ttl)
  local raw = redis.call('HGETALL', integration)
  if taken and #raw > 0 then
    local previous = redis.call('HGET', integration, 'attempt')
    if previous then
      local left = cjson.decode(previous)
      redis.call('HSETNX', integration, 'lost_attempt', cjson.encode({fp = left.fp, since = left.since}))
    end
    redis.call('HSET', integration, 'attempt', cjson.encode({owner = owner, since = since,
      ['until'] = journal_until, fp = redis.call('HGET', integration, 'refresh_fp') or ''}))
  end
  results[2 * i - 1] = taken and 1 or 0
  results[2 * i] = raw
end
return results
