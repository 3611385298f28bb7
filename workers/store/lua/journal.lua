-- Name the refresh token an attempt is about to send, when the journal entry that acquire_and_load.lua
-- made could not (no fingerprint stored yet: the first refresh after a creation or an update).
-- Returns 1 (recorded) or 0 (the entry is not ours any more).
--
-- KEYS[1]  integration hash   P integration:<name>
-- ARGV[1]  owner token of the attempt
-- ARGV[2]  fingerprint of the refresh token (a keyed hash, never the token)
local journal = redis.call('HGET', KEYS[1], 'attempt')
if not journal then return 0 end
local entry = cjson.decode(journal)
if entry.owner ~= ARGV[1] then return 0 end
entry.fp = ARGV[2]
redis.call('HSET', KEYS[1], 'attempt', cjson.encode(entry), 'refresh_fp', ARGV[2])
return 1
