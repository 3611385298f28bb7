-- Delete an integration: every key of its own, its place in the names, schedule and in-flight sets, and
-- in the operators' index (index.lua), all in one step; then announce it to readers waiting on it.
-- Returns how many of its own keys existed (0: it was gone).
--
-- KEYS[1]  integration hash        P integration:<name>
-- KEYS[2]  consumer token hash     P token:<name>
-- KEYS[3]  history list            P history:<name>
-- KEYS[4]  creation reservation    P reserve:<name>
-- KEYS[5]  refresh lock            P lock:<name>
-- KEYS[6]  set of all names        P names
-- KEYS[7]  refresh schedule zset   P schedule
-- KEYS[8]  in-flight zset          P inflight
-- KEYS[9]  the index's names       P index:names
-- KEYS[10] the index's cell sizes  P index:cells
-- KEYS[11] the token lifetimes tally P metrics:lifetimes (see lifetimes.lua)
-- ARGV[1]  the integration's name
-- ARGV[2]  the pub/sub channel its writes are announced on   P events:<name>
-- ARGV[3]  prefix of the index's cells                       P index:cell:
local name = ARGV[1]
index_unfile({names = KEYS[9], cells = KEYS[10], cell_prefix = ARGV[3]}, name, KEYS[1])
lifetime_tally(KEYS[11], KEYS[1], false)
local deleted = redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5])
redis.call('SREM', KEYS[6], name)
redis.call('ZREM', KEYS[7], name)
redis.call('ZREM', KEYS[8], name)
redis.call('PUBLISH', ARGV[2], 'deleted')
return deleted
