-- Repair the operators' index (index.lua) for a batch of names, each as its record says: an integration is
-- filed in its cell (taken out of another it was in), a name without an integration leaves the index
-- altogether. This is the migration of a store made before the index existed, and a repair after hands
-- changed Redis; run on every name, it leaves a correct index as it was. With ARGV[3] 'stale' only names
-- without an integration are looked at (the index's own names, after every stored one was filed); with
-- 'recount', every cell's size is set to what the cell holds.
-- Returns {names filed anew or moved, names taken out} (for 'recount': {sizes corrected, 0}).
--
-- KEYS[1]  the index's names        P index:names
-- KEYS[2]  the index's cell sizes   P index:cells
-- ARGV[1]  prefix of the integration hashes   P integration:
-- ARGV[2]  prefix of the index's cells        P index:cell:
-- ARGV[3]  'names', 'stale' or 'recount'
-- ARGV[4..n]  the names (for 'names' and 'stale')
local ix = {names = KEYS[1], cells = KEYS[2], cell_prefix = ARGV[2]}
local cells = redis.call('HKEYS', ix.cells)
if ARGV[3] == 'recount' then
  local corrected = 0
  for _, cell in ipairs(cells) do
    local size = redis.call('ZCARD', ix.cell_prefix .. cell)
    if tostring(size) ~= redis.call('HGET', ix.cells, cell) then
      corrected = corrected + 1
      if size == 0 then redis.call('HDEL', ix.cells, cell) else redis.call('HSET', ix.cells, cell, size) end
    end
  end
  return {corrected, 0}
end
local filed, removed = 0, 0
for i = 4, #ARGV do
  local name = ARGV[i]
  local integration = ARGV[1] .. name
  if redis.call('EXISTS', integration) == 1 then
    if ARGV[3] == 'names' then filed = filed + index_file(ix, name, integration) end
  else
    -- Its record is gone, and with it the note of its cell: look in each (there are few).
    local was = redis.call('ZREM', ix.names, name)
    for _, cell in ipairs(cells) do was = was + index_leave(ix, name, cell) end
    if was > 0 then removed = removed + 1 end
  end
end
return {filed, removed}
