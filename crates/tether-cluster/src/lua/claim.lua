-- ARGV: P id node presented_hash fresh_hash  (hashes: 64 hex digits)
-- {-1} unknown, {-2} invalid token, {-3} reused token, else
-- {fence, user, tok, pend, ret, in, ack, next, idle, mf, {messages}}
local id, node, presented, fresh = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local r = rk(id)
local f = redis.call('HMGET', r, 'fence', 'owner', 'user', 'tok', 'pend', 'ret', 'in', 'ack', 'next', 'idle', 'mf')
if not f[1] then return {-1} end
local function at(list, h)
  for i = 1, #list, 64 do if string.sub(list, i, i + 63) == h then return i end end
  return nil
end
local tok, pend, ret = f[4], f[5], f[6]
if not (tok == presented or at(pend, presented)) then
  if at(ret, presented) then return {-3} end
  return {-2}
end
-- Whoever presents a token holds it: an issued one becomes current; the
-- current one and those issued before it are retired, later ones stay
-- valid (PROTOCOL §5.4, TokenState::presented).
if tok ~= presented then
  local i = at(pend, presented)
  ret = ret .. tok .. string.sub(pend, 1, i - 1)
  pend = string.sub(pend, i + 64)
  tok = presented
end
local fence = redis.call('HINCRBY', r, 'fence', 1)
local old = f[2]
if old ~= node then
  if old ~= '' then
    redis.call('SREM', P .. ':n:' .. old, id)
    redis.call('PUBLISH', P .. ':w:' .. old, 't' .. id)
  end
  redis.call('HSET', r, 'owner', node)
end
redis.call('SADD', P .. ':n:' .. node, id)
redis.call('ZREM', P .. ':orphans', id)
if not at(pend, fresh) then
  pend = pend .. fresh
  if #pend > 256 then ret = ret .. string.sub(pend, 1, 64); pend = string.sub(pend, 65) end
end
if #ret > 256 then ret = string.sub(ret, #ret - 255) end
redis.call('HSET', r, 'tok', tok, 'pend', pend, 'ret', ret)
return {fence, f[3], tok, pend, ret, f[7], f[8], f[9], f[10], f[11], redis.call('LRANGE', ok(id), 0, -1)}
