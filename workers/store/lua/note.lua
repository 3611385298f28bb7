-- A note for operators in an integration's history (no status change), kept only while the
-- integration exists. Returns 1 (noted) or 0 (no such integration).
--
-- KEYS[1]  integration hash   P integration:<name>
-- KEYS[2]  history list       P history:<name>
-- ARGV[1]  the entry (JSON)
-- ARGV[2]  how many history entries are kept
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('LPUSH', KEYS[2], ARGV[1])
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[2]) - 1)
return 1
