-- Drop a refresh lock only if it is still ours. Returns 1 (dropped) or 0.
--
-- KEYS[1]  refresh lock   P lock:<name>
-- ARGV[1]  owner token
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
