-- ARGV: P id node fence seq max_messages max_bytes n (to payload)*n
-- {-2} gone, {-1} fenced, {0} already committed, else {1, seq or 0 or -1 per message}
local id, node = ARGV[2], ARGV[3]
local r = rk(id)
local f = redis.call('HMGET', r, 'fence', 'in')
if not f[1] then return {-2} end
if f[1] ~= ARGV[4] then return {-1} end
local seq = tonumber(ARGV[5])
if seq <= tonumber(f[2]) then return {0} end
local maxm, maxb = tonumber(ARGV[6]), tonumber(ARGV[7])
local res = {1}
for i = 0, tonumber(ARGV[8]) - 1 do
  res[#res + 1] = append(ARGV[9 + 2 * i], ARGV[10 + 2 * i], node, maxm, maxb)
end
redis.call('HSET', r, 'in', seq)
return res
