-- ARGV: P id fence -> -2 gone, -1 fenced, 1 removed
local id = ARGV[2]
local r = rk(id)
local f = redis.call('HMGET', r, 'fence', 'owner')
if not f[1] then return -2 end
if f[1] ~= ARGV[3] then return -1 end
if f[2] ~= '' then redis.call('SREM', P .. ':n:' .. f[2], id) end
redis.call('ZREM', P .. ':orphans', id)
redis.call('DEL', r, ok(id))
return 1
