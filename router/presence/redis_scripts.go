package presence

import "github.com/redis/go-redis/v9"

// Lua scripts of the Redis schema (see RedisStore). Each touches keys of one hash slot only, so
// they run unchanged on Redis Cluster.

// scriptRegister: KEYS lease, epoch counter; ARGV ttl ms. Returns the new epoch (string).
// Epochs come from the server clock in microseconds, kept strictly increasing by the counter,
// so an edge's epoch grows even after the counter was lost (FLUSHALL, failover).
var scriptRegister = redis.NewScript(`
local t = redis.call('TIME')
local e = tonumber(t[1]) * 1000000 + tonumber(t[2])
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
if e <= last then e = last + 1 end
local es = string.format('%.0f', e)
redis.call('SET', KEYS[2], es)
redis.call('SET', KEYS[1], es .. ':' .. ARGV[1], 'PX', ARGV[1])
return es
`)

// scriptRenew: KEYS lease; ARGV epoch. Returns the ttl in ms, or 0 when the lease is not held.
var scriptRenew = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if not v then return 0 end
local e, ttl = string.match(v, '^(%d+):(%d+)$')
if e ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ttl)
return tonumber(ttl)
`)

// scriptDeregister: KEYS lease; ARGV epoch. Deletes the lease if it is held by epoch.
var scriptDeregister = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v and string.match(v, '^(%d+):') == ARGV[1] then redis.call('DEL', KEYS[1]) return 1 end
return 0
`)

// scriptApply: KEYS lease, conns (c), memberships (m), room counts (r) of one edge/epoch;
// ARGV epoch, then triples kind, conn id, user-or-room. Checks the lease, applies the ops to
// the edge's own keys and returns the global effects as one string of records, each a kind
// byte and two length-prefixed fields ("c3:1270:" = kind c, "127", ""):
//
//	c, op index, ''     connection added: write the user index entry
//	c, op index, 'r'    connection refreshed (same user): rewrite the entry, nothing changed
//	d, conn id, user    connection removed: delete the user index entry
//	j, room, ''         +1 member of room on this edge
//	l, room, ''         -1 member of room on this edge
//
// (One bulk string instead of an array of three strings per op: cheaper to build in Redis and
// to parse here.)
// Room lists in m are length-prefixed ("4:room"), so any room name is safe.
var scriptApply = redis.NewScript(`
local lease = redis.call('GET', KEYS[1])
if not lease or string.match(lease, '^(%d+):') ~= ARGV[1] then
  return redis.error_reply('LEASELOST')
end
local out, n = {}, 0
local function emit(a, b, c) n = n + 1; out[n] = a .. #b .. ':' .. b .. #c .. ':' .. c end
local function parse(rs)
  local t, p = {}, 1
  while p <= #rs do
    local c = string.find(rs, ':', p, true)
    local l = tonumber(string.sub(rs, p, c - 1))
    t[#t + 1] = string.sub(rs, c + 1, c + l)
    p = c + l + 1
  end
  return t
end
local function enc(t)
  local b = {}
  for i = 1, #t do b[i] = #t[i] .. ':' .. t[i] end
  return table.concat(b)
end
-- Batch-local state, so each key is read at most once and written once per call:
-- cur[id]: the conn's user (false: no such conn), mems[id]: its room list (written back at
-- the end for the ids in dorder), rdelta[room]: net member change (applied at the end).
local cur, mems, dirty, dorder, rdelta, rorder = {}, {}, {}, {}, {}, {}
local function user(id)
  local u = cur[id]
  if u == nil then u = redis.call('HGET', KEYS[2], id) or false; cur[id] = u end
  return u
end
local function rooms(id)
  local t = mems[id]
  if t == nil then
    local rs = redis.call('HGET', KEYS[3], id)
    if rs then t = parse(rs) else t = {} end
    mems[id] = t
  end
  return t
end
local function touch(id)
  if not dirty[id] then dirty[id] = true; dorder[#dorder + 1] = id end
end
local function delta(room, d)
  if rdelta[room] == nil then rdelta[room] = 0; rorder[#rorder + 1] = room end
  rdelta[room] = rdelta[room] + d
end
local function leaveall(id)
  for _, room in ipairs(rooms(id)) do delta(room, -1); emit('l', room, '') end
  mems[id] = {}
  touch(id)
end
for i = 2, #ARGV, 3 do
  local k, id, s = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if k == '1' then
    local u = user(id)
    if u and u ~= s then
      leaveall(id)
      emit('d', id, u)
    elseif not u then
      mems[id] = {} -- a new connection has joined nothing
    end
    local refresh = ''
    if u == s then refresh = 'r' else redis.call('HSET', KEYS[2], id, s); cur[id] = s end
    emit('c', tostring((i - 2) / 3), refresh)
  elseif k == '2' then
    local u = user(id)
    if u then
      leaveall(id)
      redis.call('HDEL', KEYS[2], id)
      cur[id] = false
      emit('d', id, u)
    end
  elseif user(id) then
    local t = rooms(id)
    local at = 0
    for j = 1, #t do if t[j] == s then at = j end end
    if k == '3' and at == 0 then
      t[#t + 1] = s
      touch(id)
      delta(s, 1)
      emit('j', s, '')
    elseif k == '4' and at > 0 then
      table.remove(t, at)
      touch(id)
      delta(s, -1)
      emit('l', s, '')
    end
  end
end
for _, id in ipairs(dorder) do
  local t = mems[id]
  if #t == 0 or not cur[id] then redis.call('HDEL', KEYS[3], id) else redis.call('HSET', KEYS[3], id, enc(t)) end
end
for _, room in ipairs(rorder) do
  local d = rdelta[room]
  if d ~= 0 and redis.call('HINCRBY', KEYS[4], room, d) <= 0 then redis.call('HDEL', KEYS[4], room) end
end
return table.concat(out)
`)

// scriptUser: KEYS user index; ARGV triples 'a'|'d', field, value. The field "on" marks a user
// whose online event has fired: it is set with the first entry and the key is deleted with
// the last, so every transition is decided atomically under the user's key, whichever router
// or reaper makes it. Returns the transitions in order ("+" online, "-" offline).
var scriptUser = redis.NewScript(`
local k, tr = KEYS[1], ''
for i = 1, #ARGV, 3 do
  if ARGV[i] == 'a' then
    redis.call('HSET', k, ARGV[i + 1], ARGV[i + 2])
    if redis.call('HSETNX', k, 'on', '1') == 1 then tr = tr .. '+' end
  elseif redis.call('HDEL', k, ARGV[i + 1]) == 1 and redis.call('HLEN', k) == 1
      and redis.call('HEXISTS', k, 'on') == 1 then
    redis.call('DEL', k)
    tr = tr .. '-'
  end
end
return tr
`)

// scriptRoom: KEYS room index; ARGV field (edge|epoch), delta. Drops the field at zero.
var scriptRoom = redis.NewScript(`
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
if n <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
return n
`)
