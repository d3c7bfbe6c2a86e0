-- ARGV: P id reason. An operator ends a session wherever it is: its owner
-- is told (1); an orphan (no live owner) is ended here (2); 0: no such session.
local id = ARGV[2]
local r = rk(id)
local owner = redis.call('HGET', r, 'owner')
if not owner then return 0 end
if owner ~= '' then
  redis.call('PUBLISH', P .. ':w:' .. owner, 'k' .. id .. ARGV[3])
  return 1
end
redis.call('ZREM', P .. ':orphans', id)
redis.call('DEL', r, ok(id))
return 2
