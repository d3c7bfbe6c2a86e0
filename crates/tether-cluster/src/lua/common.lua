-- Shared by every tether script. ARGV[1] is the key prefix. Keys:
--   P:s:ID      HASH  fence owner user tok pend ret in ack next bytes idle mf grace
--   P:s:ID:o    LIST  unacknowledged server messages: element i has seq ack+1+i
--   P:n:NODE    SET   sessions NODE owns        P:nodes   ZSET node -> last lease (ms)
--   P:orphans   ZSET  orphaned session -> expiry deadline (ms)
--   channel P:w:NODE  'w'..ID (messages stored for ID), 't'..ID (ID claimed elsewhere)
local P = ARGV[1]
local function rk(id) return P .. ':s:' .. id end
local function ok(id) return P .. ':s:' .. id .. ':o' end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- Stores one message for session `id`; its seq, 0 if the session is gone,
-- -1 if its replay buffer is full, -(max + 3) if it is larger than the max
-- bytes of payload the client's frames carry. Wakes the owner unless it is `me`.
local function append(id, payload, me, maxm, maxb)
  local r = rk(id)
  local f = redis.call('HMGET', r, 'next', 'bytes', 'owner', 'mf')
  if not f[1] then return 0 end
  if #payload > tonumber(f[4]) - 9 then return -(tonumber(f[4]) - 9 + 3) end
  local o = ok(id)
  if redis.call('LLEN', o) >= maxm or tonumber(f[2]) + #payload > maxb then return -1 end
  local seq = tonumber(f[1])
  redis.call('HSET', r, 'next', seq + 1)
  redis.call('HINCRBY', r, 'bytes', #payload)
  redis.call('RPUSH', o, payload)
  if f[3] ~= '' and f[3] ~= me then redis.call('PUBLISH', P .. ':w:' .. f[3], 'w' .. id) end
  return seq
end

-- Every session `node` still owns becomes an orphan: its fence raised (the
-- node cannot write for it any more), no owner, expiring at `from` + its
-- grace. The node's set is emptied. Returns the orphans' ids.
local function orphan_all(node, from)
  local set = P .. ':n:' .. node
  local out = {}
  for _, id in ipairs(redis.call('SMEMBERS', set)) do
    local r = rk(id)
    local f = redis.call('HMGET', r, 'owner', 'grace')
    if f[1] == node then
      redis.call('HSET', r, 'owner', '')
      redis.call('HINCRBY', r, 'fence', 1)
      redis.call('ZADD', P .. ':orphans', from + tonumber(f[2]), id)
      out[#out + 1] = id
    end
  end
  redis.call('DEL', set)
  return out
end
