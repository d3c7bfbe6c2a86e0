-- ARGV: P node -> 1 if the node was not known (first lease, or declared dead since)
return redis.call('ZADD', P .. ':nodes', now_ms(), ARGV[2])
