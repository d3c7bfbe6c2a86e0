-- The gateway's rooms in Redis, after tether-cluster's common.lua (P, rk,
-- ok, append, now_ms). Keys of the gateway's own:
--   P:s:ID:m   HASH  the member: user, name, state, rtt
--   P:s:ID:r   SET   the rooms the session is in
--   P:r:ROOM   ZSET  the room's members (score 0: ordered by session id)
--   P:rooms    SET   every room
-- Scripts answer {status, {payload, ...}, {to, fate, payload index, ...}}:
-- status 1 done, 0 the client message was committed before (nothing done),
-- -1 fenced, -2 the session is gone, 2 refused (then a code follows).
local function mkey(id) return P .. ':s:' .. id .. ':m' end
local function srooms(id) return P .. ':s:' .. id .. ':r' end
local function room_key(room) return P .. ':r:' .. room end

-- A member as events show it (docs/GATEWAY.md), in `state` if given.
local function member(id, state)
  local m = redis.call('HMGET', mkey(id), 'user', 'name', 'state', 'rtt')
  local rtt = cjson.null
  if m[4] then rtt = tonumber(m[4]) end
  local user = m[1] or ''
  return cjson.encode({session = id, user = user, name = m[2] or user, state = state or m[3] or 'active', rtt_ms = rtt})
end

local function presence(room, mj)
  return '{"ev":"presence","room":' .. cjson.encode(room) .. ',"member":' .. mj .. '}'
end

-- Collects what a script sends.
local Out = {}
Out.__index = Out
local function out_new(me, maxm, maxb)
  return setmetatable({payloads = {}, sent = {}, me = me, maxm = maxm, maxb = maxb}, Out)
end
function Out:payload(p)
  self.payloads[#self.payloads + 1] = p
  return #self.payloads
end
function Out:send(to, i)
  local s = self.sent
  s[#s + 1] = to
  s[#s + 1] = append(to, self.payloads[i], self.me, self.maxm, self.maxb)
  s[#s + 1] = i
end
-- To every member of `room` but `except`, unless the room is larger than
-- `limit` (large rooms announce no presence; nil: no limit).
function Out:room(room, i, except, limit)
  local key = room_key(room)
  if limit and redis.call('ZCARD', key) > limit then return end
  for _, to in ipairs(redis.call('ZRANGE', key, 0, -1)) do
    if to ~= except then self:send(to, i) end
  end
end
function Out:answer(status)
  return {status, self.payloads, self.sent}
end

-- The fence and commit checks of a client message: nil to go on, else the answer.
local function gate(id, fence, seq)
  local f = redis.call('HMGET', rk(id), 'fence', 'in')
  if not f[1] then return {-2, {}, {}} end
  if f[1] ~= fence then return {-1, {}, {}} end
  if tonumber(seq) <= tonumber(f[2]) then return {0, {}, {}} end
  return nil
end

-- The member list sent to clients: `you` first, then others, `limit` in all.
local function listed(room, you, limit)
  local list = {member(you)}
  for _, id in ipairs(redis.call('ZRANGE', room_key(room), 0, limit)) do
    if #list >= limit then break end
    if id ~= you then list[#list + 1] = member(id) end
  end
  return '[' .. table.concat(list, ',') .. ']', redis.call('ZCARD', room_key(room))
end

local function remove_from(room, id)
  redis.call('ZREM', room_key(room), id)
  redis.call('SREM', srooms(id), room)
  if redis.call('ZCARD', room_key(room)) == 0 then
    redis.call('DEL', room_key(room))
    redis.call('SREM', P .. ':rooms', room)
  end
end

-- The session ended (`left` or `expired`): its rooms hear it once, through
-- `o`, and it leaves them. Idempotent: a second call finds nothing.
local function end_member(id, state, o, presence_max)
  local rooms = redis.call('SMEMBERS', srooms(id))
  if #rooms > 0 then
    local mj = member(id, state)
    for _, room in ipairs(rooms) do
      o:room(room, o:payload(presence(room, mj)), id, presence_max)
    end
    for _, room in ipairs(rooms) do remove_from(room, id) end
  end
  redis.call('DEL', mkey(id), srooms(id))
end
