-- Create an integration with its first token, history entry and schedule, unless the name is taken.
-- Returns 1 (created) or 0 (an integration of that name exists).
--
-- KEYS[1]  integration hash        P integration:<name>
-- KEYS[2]  consumer token hash     P token:<name>
-- KEYS[3]  history list            P history:<name>
-- KEYS[4]  set of all names        P names
-- KEYS[5]  refresh schedule zset   P schedule
-- KEYS[6]  creation reservation    P reserve:<name>   (dropped: the creation is over)
-- KEYS[7]  webhook outbox list     P outbox
-- ARGV[1]  integration fields, JSON object of strings
-- ARGV[2]  token fields, JSON object of strings
-- ARGV[3]  history entry, JSON {at, status, reason}
-- ARGV[4]  the integration's name
-- ARGV[5]  first planned refresh (a score), '' for none
-- ARGV[6]  '1': record the status change in the outbox for the webhook
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local fields = cjson.decode(ARGV[1])
if ARGV[6] == '1' then
  -- The id (name, creation time, version) stays unique when a name is deleted and used again.
  local entry = cjson.decode(ARGV[3])
  redis.call('RPUSH', KEYS[7], cjson.encode({id = ARGV[4] .. ':' .. fields['created_at'] .. ':1', name = ARGV[4],
    old_status = cjson.null,
    new_status = entry['status'], reason = entry['reason'], at = entry['at']}))
end
for k, v in pairs(fields) do redis.call('HSET', KEYS[1], k, v) end
redis.call('HSET', KEYS[1], 'version', 1)
redis.call('DEL', KEYS[2])
for k, v in pairs(cjson.decode(ARGV[2])) do redis.call('HSET', KEYS[2], k, v) end
redis.call('DEL', KEYS[3])
redis.call('LPUSH', KEYS[3], ARGV[3])
redis.call('SADD', KEYS[4], ARGV[4])
if ARGV[5] ~= '' then redis.call('ZADD', KEYS[5], ARGV[5], ARGV[4]) end
redis.call('DEL', KEYS[6])
return 1
