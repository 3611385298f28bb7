-- Library: the operators' index. Prepended to the scripts that create, change and delete integrations
-- (create.lua, write.lua, delete.lua) and to reindex.lua, so the index changes in the same atomic step as
-- the integration it files, and cannot drift from it:
--
--   P index:names                           zset (scores 0)  every integration, in name order
--   P index:cell:<status>:<grant>:<provider> zset (scores 0)  those with that status, grant type and provider
--                                                             preset ('' for none): one cell each
--   P index:cells                           hash             <status>:<grant>:<provider> -> the cell's size
--
-- An integration hash names the cell it is filed in (field index_cell), so a change takes it out of exactly
-- that one. Cell keys are made here from a prefix (fine on one Redis, not on a cluster). The callers pass
-- `ix`: {names = P index:names, cells = P index:cells, cell_prefix = 'P index:cell:'}.

-- The cell of an integration: its provider is the preset its spec (JSON) names, '' when none.
local function index_cell_of(status, grant, spec)
  local provider = ''
  if spec then
    local ok, decoded = pcall(cjson.decode, spec)
    if ok and type(decoded) == 'table' and type(decoded.provider) == 'string' then provider = decoded.provider end
  end
  return (status or '') .. ':' .. (grant or '') .. ':' .. provider
end

-- Take `name` out of `cell`; an empty cell leaves the sizes. Returns 1 when it was there.
local function index_leave(ix, name, cell)
  if redis.call('ZREM', ix.cell_prefix .. cell, name) == 0 then return 0 end
  if redis.call('HINCRBY', ix.cells, cell, -1) <= 0 then redis.call('HDEL', ix.cells, cell) end
  return 1
end

-- File `name` where its integration hash (as it is now) says: out of the cell it was in, if another, into its
-- own. Returns 1 when anything changed (it was missing, or misfiled), 0 when it was filed right already.
local function index_file(ix, name, integration)
  local info = redis.call('HMGET', integration, 'status', 'grant_type', 'spec', 'index_cell')
  local cell, old = index_cell_of(info[1], info[2], info[3]), info[4]
  local changed = 0
  if old and old ~= cell then index_leave(ix, name, old) end
  if redis.call('ZADD', ix.cell_prefix .. cell, 0, name) == 1 then
    redis.call('HINCRBY', ix.cells, cell, 1)
    changed = 1
  end
  if redis.call('ZADD', ix.names, 0, name) == 1 then changed = 1 end
  if old ~= cell then
    redis.call('HSET', integration, 'index_cell', cell)
    changed = 1
  end
  return changed
end

-- Take `name` out of the index before its integration hash is deleted.
local function index_unfile(ix, name, integration)
  local old = redis.call('HGET', integration, 'index_cell')
  if old then index_leave(ix, name, old) end
  redis.call('ZREM', ix.names, name)
end
