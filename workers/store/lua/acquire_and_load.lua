-- One round trip for the start of a refresh: take the lock and read the integration.
-- Returns {1 or 0 (lock taken or not), the integration hash either way}.
--
-- KEYS[1]  refresh lock       P lock:<name>
-- KEYS[2]  integration hash   P integration:<name>
-- ARGV[1]  owner token
-- ARGV[2]  lock time to live, ms
local taken = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2])
return {taken and 1 or 0, redis.call('HGETALL', KEYS[2])}
