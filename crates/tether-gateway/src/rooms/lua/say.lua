-- ARGV: P id node fence seq maxm maxb room body_json. To every member, the sayer too.
local id, room = ARGV[2], ARGV[8]
local stop = gate(id, ARGV[4], ARGV[5])
if stop then return stop end
if not redis.call('ZSCORE', room_key(room), id) then return {2, 'not_member'} end
local o = out_new(ARGV[3], tonumber(ARGV[6]), tonumber(ARGV[7]))
local msg = '{"ev":"message","room":' .. cjson.encode(room) .. ',"from":' .. member(id) .. ',"body":' .. ARGV[9] .. '}'
o:room(room, o:payload(msg), nil, nil)
redis.call('HSET', rk(id), 'in', ARGV[5])
return o:answer(1)
