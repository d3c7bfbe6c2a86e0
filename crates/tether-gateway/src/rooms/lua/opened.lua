-- ARGV: P id user name. A new session: its member entry.
local id = ARGV[2]
redis.call('HSET', mkey(id), 'user', ARGV[3], 'name', ARGV[4], 'state', 'active')
return 1
