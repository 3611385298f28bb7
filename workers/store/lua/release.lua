-- Drop a refresh lock only if it is still ours, and our entry in the attempt journal with it (the attempt
-- ended without a write). Returns 1 (dropped) or 0.
--
-- KEYS[1]  refresh lock       P lock:<name>
-- KEYS[2]  integration hash   P integration:<name>
-- ARGV[1]  owner token
local journal = redis.call('HGET', KEYS[2], 'attempt')
if journal and cjson.decode(journal).owner == ARGV[1] then redis.call('HDEL', KEYS[2], 'attempt') end
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
