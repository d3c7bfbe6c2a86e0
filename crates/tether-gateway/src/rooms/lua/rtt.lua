-- ARGV: P id rtt_ms
redis.call('HSET', mkey(ARGV[2]), 'rtt', ARGV[3])
return 1
