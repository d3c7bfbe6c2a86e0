-- ARGV: P id fence ack -> -2 gone, -1 fenced, 1 done
local id = ARGV[2]
local r = rk(id)
local f = redis.call('HMGET', r, 'fence', 'ack', 'next')
if not f[1] then return -2 end
if f[1] ~= ARGV[3] then return -1 end
local old, ack = tonumber(f[2]), tonumber(ARGV[4])
if ack > tonumber(f[3]) - 1 then ack = tonumber(f[3]) - 1 end
if ack <= old then return 1 end
local o = ok(id)
local b = 0
for _, p in ipairs(redis.call('LRANGE', o, 0, ack - old - 1)) do b = b + #p end
redis.call('LTRIM', o, ack - old, -1)
redis.call('HINCRBY', r, 'bytes', -b)
redis.call('HSET', r, 'ack', ack)
return 1
