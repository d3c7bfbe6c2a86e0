-- ARGV: P node maxm maxb room payload. An operator's publish to a room; {-2} if no such room.
local room = ARGV[5]
if redis.call('EXISTS', room_key(room)) == 0 then return {-2, {}, {}} end
local o = out_new(ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]))
o:room(room, o:payload(ARGV[6]), nil, nil)
return o:answer(1)
