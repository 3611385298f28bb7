-- Drop refresh locks that are still ours, and our entries in the attempt journal with them (the attempts
-- ended without a write). Returns, for each lock in order, 1 (dropped) or 0 (not ours, or its journal
-- entry could not be read: the lock is dropped anyway when ours).
--
-- KEYS[2i-1]  refresh lock of the i-th integration       P lock:<name>
-- KEYS[2i]    integration hash of the i-th integration   P integration:<name>
-- ARGV[i]     owner token of the i-th lock
local function forget(integration, owner)
  local journal = redis.call('HGET', integration, 'attempt')
  if journal and cjson.decode(journal).owner == owner then redis.call('HDEL', integration, 'attempt') end
end

local results = {}
for i = 1, #ARGV do
  local lock, integration, owner = KEYS[2 * i - 1], KEYS[2 * i], ARGV[i]
  pcall(forget, integration, owner)
  results[i] = (redis.call('GET', lock) == owner) and redis.call('DEL', lock) or 0
end
return results
