-- Extend a refresh lock that is still ours (a batch's request about to go out late), and the `until` of our
-- attempt's journal entry with it. Returns 1 (extended) or 0 (not ours any more: the request must not go out).
--
-- KEYS[1]  refresh lock       P lock:<name>
-- KEYS[2]  integration hash   P integration:<name>
-- ARGV[1]  owner token
-- ARGV[2]  lock time to live from now, ms
-- ARGV[3]  now (unix seconds)
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local journal = redis.call('HGET', KEYS[2], 'attempt')
if journal then
  local entry = cjson.decode(journal)
  if entry.owner == ARGV[1] then
    entry['until'] = tonumber(ARGV[3]) + tonumber(ARGV[2]) / 1000
    redis.call('HSET', KEYS[2], 'attempt', cjson.encode(entry))
  end
end
return 1
