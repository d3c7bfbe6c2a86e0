-- ARGV: P id fence hash (64 hex digits) -> -2 gone, -1 fenced, 1 done
-- The client proved it holds this token (its first frame after the WELCOME
-- that carried it, PROTOCOL §5.4): it becomes the only valid one, as in the
-- node's core, so a stale handshake carrying an older token cannot claim
-- the session away from the node that carries it.
local id, h = ARGV[2], ARGV[4]
local r = rk(id)
local f = redis.call('HMGET', r, 'fence', 'tok', 'pend', 'ret')
if not f[1] then return -2 end
if f[1] ~= ARGV[3] then return -1 end
local tok, pend, ret = f[2], f[3], f[4]
if tok == h then return 1 end
local held = false
for i = 1, #pend, 64 do if string.sub(pend, i, i + 63) == h then held = true end end
if not held then return 1 end -- not a token this record issued: nothing to do
ret = ret .. tok
for i = 1, #pend, 64 do
  local p = string.sub(pend, i, i + 63)
  if p ~= h then ret = ret .. p end
end
if #ret > 256 then ret = string.sub(ret, #ret - 255) end
redis.call('HSET', r, 'tok', h, 'pend', '', 'ret', ret)
return 1
