-- Hold names while their first tokens are fetched, so two creations cannot race: a name is held only if no
-- integration has it and no other creation holds it. Returns, for each in order, 1 (held) or 0.
--
-- KEYS[2i-1]  integration hash of the i-th name    P integration:<name>
-- KEYS[2i]    creation reservation of the i-th     P reserve:<name>
-- ARGV[1]     reservation time to live, ms
local results = {}
for i = 1, #KEYS / 2 do
  if redis.call('EXISTS', KEYS[2 * i - 1]) == 1 then
    results[i] = 0
  else
    results[i] = redis.call('SET', KEYS[2 * i], '1', 'NX', 'PX', ARGV[1]) and 1 or 0
  end
end
return results
