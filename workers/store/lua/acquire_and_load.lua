-- One round trip for the start of a refresh: take the lock, read the integration, and record the attempt
-- in its journal (field `attempt`: JSON {owner, since, until, fp}: "refresh in flight with the refresh
-- token whose fingerprint is fp since `since`"). The attempt's write or release clears it, so an entry
-- found here was left by an attempt that neither wrote nor released: it died (or stalled past its lock)
-- after perhaps sending its refresh token. That evidence is kept in `lost_attempt` ({fp, since}; the
-- earliest one) until a new access token is written.
-- Returns {1 or 0 (lock taken or not), the integration hash as it was before this step, either way}.
--
-- KEYS[1]  refresh lock       P lock:<name>
-- KEYS[2]  integration hash   P integration:<name>
-- ARGV[1]  owner token
-- ARGV[2]  lock time to live, ms
-- ARGV[3]  now (unix seconds)
local taken = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
local raw = redis.call('HGETALL', KEYS[2])
if taken and #raw > 0 then
  local previous = redis.call('HGET', KEYS[2], 'attempt')
  if previous then
    local left = cjson.decode(previous)
    redis.call('HSETNX', KEYS[2], 'lost_attempt', cjson.encode({fp = left.fp, since = left.since}))
  end
  local since = tonumber(ARGV[3])
  redis.call('HSET', KEYS[2], 'attempt', cjson.encode({owner = ARGV[1], since = since,
    ['until'] = since + tonumber(ARGV[2]) / 1000, fp = redis.call('HGET', KEYS[2], 'refresh_fp') or ''}))
end
return {taken and 1 or 0, raw}
