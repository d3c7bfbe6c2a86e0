-- ARGV: P id from -> {-1} gone, else {first_seq, {messages}}
local id = ARGV[2]
local ack = redis.call('HGET', rk(id), 'ack')
if not ack then return {-1} end
local start = tonumber(ARGV[3]) - tonumber(ack) - 1
if start < 0 then start = 0 end
return {tonumber(ack) + 1 + start, redis.call('LRANGE', ok(id), start, -1)}
