-- ARGV: P id node maxm maxb state presence_max
-- The session ended (`left`, or `expired`): its rooms hear it once, and it
-- leaves them. Idempotent: a second call finds nothing.
local id = ARGV[2]
local o = out_new(ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]))
local rooms = redis.call('SMEMBERS', srooms(id))
if #rooms > 0 then
  local mj = member(id, ARGV[6])
  for _, room in ipairs(rooms) do
    o:room(room, o:payload(presence(room, mj)), id, tonumber(ARGV[7]))
  end
  for _, room in ipairs(rooms) do remove_from(room, id) end
end
redis.call('DEL', mkey(id), srooms(id))
return o:answer(1)
