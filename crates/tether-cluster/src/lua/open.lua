-- ARGV: P id node user tok in ack next idle_ms max_frame grace_ms
local id, node = ARGV[2], ARGV[3]
local r = rk(id)
redis.call('DEL', r, ok(id))
redis.call('HSET', r, 'fence', 1, 'owner', node, 'user', ARGV[4], 'tok', ARGV[5], 'pend', '', 'ret', '',
  'in', ARGV[6], 'ack', ARGV[7], 'next', ARGV[8], 'bytes', 0, 'idle', ARGV[9], 'mf', ARGV[10], 'grace', ARGV[11])
redis.call('SADD', P .. ':n:' .. node, id)
return 1
