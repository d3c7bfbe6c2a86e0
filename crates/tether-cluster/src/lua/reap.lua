-- ARGV: P lease_ttl_ms lease_interval_ms limit
-- Nodes whose lease lapsed: their sessions become orphans (fence raised, so
-- the node cannot write for them if it wakes up), due to expire at the last
-- lease + one renewal interval + their grace. Then expires due orphans.
-- Returns {{id, user, ...} expired by this call, {id, ...} orphaned by it}.
local now = now_ms()
local orphaned = {}
local dead = redis.call('ZRANGEBYSCORE', P .. ':nodes', '-inf', now - tonumber(ARGV[2]), 'WITHSCORES')
for i = 1, #dead, 2 do
  local node, last = dead[i], tonumber(dead[i + 1])
  for _, id in ipairs(orphan_all(node, last + tonumber(ARGV[3]))) do orphaned[#orphaned + 1] = id end
  redis.call('ZREM', P .. ':nodes', node)
end
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. ':orphans', '-inf', now, 'LIMIT', 0, tonumber(ARGV[4]))) do
  redis.call('ZREM', P .. ':orphans', id)
  local f = redis.call('HMGET', rk(id), 'owner', 'user')
  if f[1] == '' then
    redis.call('DEL', rk(id), ok(id))
    out[#out + 1] = id
    out[#out + 1] = f[2]
  end
end
return {out, orphaned}
