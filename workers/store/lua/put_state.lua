-- Store a one-time authorization state for a link, unless the link is spent or has too many flows
-- under way. Returns 1 (stored), 0 (too many outstanding states), -1 (the link is spent).
--
-- KEYS[1]  the state                       P state:<sha256>
-- KEYS[2]  the link's outstanding states   P link:states:<link id>  (zset: state key -> expiry)
-- KEYS[3]  the link's spent marker         P link:spent:<link id>
-- ARGV[1]  the state's value (JSON)
-- ARGV[2]  time to live, seconds
-- ARGV[3]  now (unix seconds)
-- ARGV[4]  most outstanding states one link may have
if redis.call('EXISTS', KEYS[3]) == 1 then return -1 end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[3])
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[4]) then return 0 end
local expires = tonumber(ARGV[3]) + tonumber(ARGV[2])
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('ZADD', KEYS[2], expires, KEYS[1])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return 1
