-- ARGV: P id node fence seq maxm maxb room name max_rooms max_members listed presence_max
local id, room, name = ARGV[2], ARGV[8], ARGV[9]
local stop = gate(id, ARGV[4], ARGV[5])
if stop then return stop end
local o = out_new(ARGV[3], tonumber(ARGV[6]), tonumber(ARGV[7]))
if not redis.call('ZSCORE', room_key(room), id) then
  if redis.call('SCARD', srooms(id)) >= tonumber(ARGV[10]) then return {2, 'too_many_rooms'} end
  if redis.call('ZCARD', room_key(room)) >= tonumber(ARGV[11]) then return {2, 'room_full'} end
end
if name ~= '' then redis.call('HSET', mkey(id), 'name', name) end
redis.call('ZADD', room_key(room), 0, id)
redis.call('SADD', srooms(id), room)
redis.call('SADD', P .. ':rooms', room)
local you = member(id)
local members, count = listed(room, id, tonumber(ARGV[12]))
local joined = '{"ev":"joined","room":' .. cjson.encode(room) .. ',"you":' .. you .. ',"members":' .. members ..
  ',"count":' .. count .. '}'
o:send(id, o:payload(joined))
o:room(room, o:payload(presence(room, you)), nil, tonumber(ARGV[13]))
redis.call('HSET', rk(id), 'in', ARGV[5])
return o:answer(1)
