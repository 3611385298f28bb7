-- One page of the operators' index (index.lua) and its rows, in one step: the cells' sizes, the names that
-- match the filters and a name prefix from a cursor on (or back from one), and some fields of each of those
-- integrations. Read in one step, the counts, the names and the rows agree with each other.
-- Returns {cells (cell, size, ...), names in the index, names stored, names matching, matching names before
-- the page, the page's names in name order, for each of them its fields (false where missing)}.
--
-- KEYS[1]  the index's cell sizes             P index:cells
-- KEYS[2]  the index's names                  P index:names
-- KEYS[3]  set of all names                   P names
-- ARGV[1]  prefix of the cells                P index:cell:
-- ARGV[2]  prefix of the integration hashes   P integration:
-- ARGV[3]  the filters, JSON {"status", "grant", "provider"}: one left out admits any value; none at all
--          reads P index:names, else the cells they admit (and merges them)
-- ARGV[4]  the lowest name that matches, as ZRANGEBYLEX takes it ('[prefix' or '-')
-- ARGV[5]  the highest ('(prefix' .. '\xff', or '+')
-- ARGV[6]  'forward' (the page starts at ARGV[7]) or 'backward' (the page ends at ARGV[7])
-- ARGV[7]  where the page starts ('(after', or ARGV[4]), or where it ends ('(before')
-- ARGV[8]  matching names up to here come before the page (a ZLEXCOUNT max), '' for none
-- ARGV[9]  most names on the page
-- ARGV[10..n]  the fields to read of each (none: no rows)
local low, high, direction, from, counted_to = ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local limit = tonumber(ARGV[9])
local backward = direction == 'backward'

local cells = redis.call('HGETALL', KEYS[1])
local want = cjson.decode(ARGV[3])
local sources = {}
if next(want) == nil then
  sources[1] = KEYS[2]
else
  for i = 1, #cells, 2 do
    local status, grant, provider = string.match(cells[i], '^([^:]*):([^:]*):(.*)$')
    if (want.status == nil or want.status == status) and (want.grant == nil or want.grant == grant)
        and (want.provider == nil or want.provider == provider) then
      sources[#sources + 1] = ARGV[1] .. cells[i]
    end
  end
end

-- Byte by byte, as sorted sets order names (Lua's own < follows the server's locale).
local function precedes(a, b)
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end

local matching, earlier, ranges = 0, 0, {}
for i, source in ipairs(sources) do
  matching = matching + redis.call('ZLEXCOUNT', source, low, high)
  if counted_to ~= '' then earlier = earlier + redis.call('ZLEXCOUNT', source, low, counted_to) end
  if backward then
    ranges[i] = redis.call('ZREVRANGEBYLEX', source, from, low, 'LIMIT', 0, limit)
  else
    ranges[i] = redis.call('ZRANGEBYLEX', source, from, high, 'LIMIT', 0, limit)
  end
end

-- Merged: each range is in order (backward: reversed), and a name is in one cell only.
local names, heads = {}, {}
for i = 1, #ranges do heads[i] = 1 end
while #names < limit do
  local best = nil
  for i, range in ipairs(ranges) do
    local candidate = range[heads[i]]
    if candidate and (best == nil or (precedes(candidate, ranges[best][heads[best]]) ~= backward)) then
      best = i
    end
  end
  if best == nil then break end
  names[#names + 1] = ranges[best][heads[best]]
  heads[best] = heads[best] + 1
end
if backward then
  for i = 1, math.floor(#names / 2) do names[i], names[#names + 1 - i] = names[#names + 1 - i], names[i] end
  earlier = earlier - #names
end

local fields = {}
for i = 10, #ARGV do fields[#fields + 1] = ARGV[i] end
local rows = {}
if #fields > 0 then
  for i, name in ipairs(names) do rows[i] = redis.call('HMGET', ARGV[2] .. name, unpack(fields)) end
end
return {cells, redis.call('ZCARD', KEYS[2]), redis.call('SCARD', KEYS[3]), matching, earlier, names, rows}
