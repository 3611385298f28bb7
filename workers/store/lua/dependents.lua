-- Keep the list of integrations that exchange this one's access token (RFC 8693 subject_integration),
-- a JSON array in its hash, read with it at every refresh. Returns 1, or 0 when there is no such
-- integration (adding) or it is being deleted.
--
-- KEYS[1]  the subject's integration hash   P integration:<subject>
-- ARGV[1]  'add' or 'remove'
-- ARGV[2]  the dependent integration's name
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HEXISTS', KEYS[1], 'deleting') == 1 then
  return 0
end
local raw = redis.call('HGET', KEYS[1], 'dependents')
local names = {}
if raw and raw ~= '' then names = cjson.decode(raw) end
local kept = {}
for _, name in ipairs(names) do
  if name ~= ARGV[2] then kept[#kept + 1] = name end
end
if ARGV[1] == 'add' then kept[#kept + 1] = ARGV[2] end
if #kept == 0 then
  redis.call('HDEL', KEYS[1], 'dependents')
else
  redis.call('HSET', KEYS[1], 'dependents', cjson.encode(kept))
end
return 1
