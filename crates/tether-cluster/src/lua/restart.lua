-- ARGV: P node. A node starting under a name it had before holds none of
-- that name's sessions any more: they become orphans (fence raised), kept
-- for their grace from now for a resume anywhere. Returns how many.
local node = ARGV[2]
local set = P .. ':n:' .. node
local now = now_ms()
local n = 0
for _, id in ipairs(redis.call('SMEMBERS', set)) do
  local r = rk(id)
  local f = redis.call('HMGET', r, 'owner', 'grace')
  if f[1] == node then
    redis.call('HSET', r, 'owner', '')
    redis.call('HINCRBY', r, 'fence', 1)
    redis.call('ZADD', P .. ':orphans', now + tonumber(f[2]), id)
    n = n + 1
  end
end
redis.call('DEL', set)
return n
