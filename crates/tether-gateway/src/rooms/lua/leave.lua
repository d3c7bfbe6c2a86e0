-- ARGV: P id node fence seq maxm maxb room presence_max
local id, room = ARGV[2], ARGV[8]
local stop = gate(id, ARGV[4], ARGV[5])
if stop then return stop end
if not redis.call('ZSCORE', room_key(room), id) then return {2, 'not_member'} end
local o = out_new(ARGV[3], tonumber(ARGV[6]), tonumber(ARGV[7]))
remove_from(room, id)
o:send(id, o:payload('{"ev":"left","room":' .. cjson.encode(room) .. '}'))
o:room(room, o:payload(presence(room, member(id, 'left'))), nil, tonumber(ARGV[9]))
redis.call('HSET', rk(id), 'in', ARGV[5])
return o:answer(1)
