-- Fence an integration that is being deleted: from now on every guarded write (write.lua) is refused, so a
-- refresh in flight cannot store a grant the deletion would not revoke. Returns 1, or 0 when it is gone.
--
-- KEYS[1]  integration hash   P integration:<name>
-- ARGV[1]  when the deletion began (Unix seconds)
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'deleting', ARGV[1])
return 1
