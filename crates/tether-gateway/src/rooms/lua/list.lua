-- ARGV: P [room]. Without a room: {room, count, ...}; with: its members' JSON, or -2.
if ARGV[2] then
  local key = room_key(ARGV[2])
  if redis.call('EXISTS', key) == 0 then return -2 end
  local out = {}
  for _, id in ipairs(redis.call('ZRANGE', key, 0, -1)) do out[#out + 1] = member(id) end
  return out
end
local out = {}
for _, room in ipairs(redis.call('SMEMBERS', P .. ':rooms')) do
  out[#out + 1] = room
  out[#out + 1] = redis.call('ZCARD', room_key(room))
end
return out
