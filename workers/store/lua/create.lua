-- Create integrations, each with its first token, history entry and schedule, unless its name is taken.
-- Returns, for each in order, 1 (created) or 0 (an integration of that name exists).
--
-- KEYS[1]  set of all names        P names
-- KEYS[2]  refresh schedule zset   P schedule
-- KEYS[3]  webhook outbox list     P outbox
-- KEYS[4]  the index's names       P index:names   (see index.lua)
-- KEYS[5]  the index's cell sizes  P index:cells
-- then four keys for the i-th integration (i from 1), at KEYS[5 + 4(i-1) + 1 .. 4]:
--   integration hash P integration:<name>, consumer token hash P token:<name>, history list
--   P history:<name>, creation reservation P reserve:<name> (dropped: the creation is over)
-- ARGV[1]  a JSON array of one object per integration:
--   name     the integration's name
--   fields   integration fields (object of strings)
--   token    consumer token fields (object of strings)
--   history  the history entry, a JSON string {at, status, reason}
--   due      first planned refresh (a score), '' for none
-- ARGV[2]  '1': record each status change in the outbox for the webhook
-- ARGV[3]  the token lifetimes tally  P metrics:lifetimes (see lifetimes.lua)
-- ARGV[4]  prefix of the index's cells   P index:cell:
local ix = {names = KEYS[4], cells = KEYS[5], cell_prefix = ARGV[4]}
local results = {}
for i, a in ipairs(cjson.decode(ARGV[1])) do
  local base = 5 + 4 * (i - 1)
  local integration, token, history, reserve = KEYS[base + 1], KEYS[base + 2], KEYS[base + 3], KEYS[base + 4]
  if redis.call('EXISTS', integration) == 1 then
    results[i] = 0
  else
    if ARGV[2] == '1' then
      -- The id (name, creation time, version) stays unique when a name is deleted and used again.
      local entry = cjson.decode(a.history)
      redis.call('RPUSH', KEYS[3], cjson.encode({id = a.name .. ':' .. a.fields['created_at'] .. ':1', name = a.name,
        old_status = cjson.null, new_status = entry['status'], reason = entry['reason'], at = entry['at']}))
    end
    local flat = {}
    for k, v in pairs(a.fields) do flat[#flat + 1] = k; flat[#flat + 1] = v end
    redis.call('HSET', integration, 'version', 1, unpack(flat))
    redis.call('DEL', token)
    local tokens = {}
    for k, v in pairs(a.token) do tokens[#tokens + 1] = k; tokens[#tokens + 1] = v end
    if #tokens > 0 then redis.call('HSET', token, unpack(tokens)) end
    redis.call('DEL', history)
    redis.call('LPUSH', history, a.history)
    redis.call('SADD', KEYS[1], a.name)
    index_file(ix, a.name, integration)
    if a.due ~= '' then redis.call('ZADD', KEYS[2], a.due, a.name) end
    if a.token.status == 'active' or a.token.status == 'retrying' then
      lifetime_tally(ARGV[3], integration, lifetime_of(a.token.expires_at, a.token.updated_at))
    end
    redis.call('DEL', reserve)
    results[i] = 1
  end
end
return results
