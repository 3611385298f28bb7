-- Get and delete an authorization state in one step, and free its link's slot; a missing state costs
-- no write at all. Returns the state's value, or nil.
--
-- KEYS[1]  the state                               P state:<sha256>
-- ARGV[1]  prefix of the links' outstanding-state sets  P link:states:
local value = redis.call('GETDEL', KEYS[1])
if not value then return false end
local link = cjson.decode(value)['link']
if link then redis.call('ZREM', ARGV[1] .. link, KEYS[1]) end
return value
