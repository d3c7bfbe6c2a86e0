-- ARGV: P node maxm maxb presence_max
-- Members whose session is no longer in the store (it expired or ended
-- while every node that would have told its rooms was down) are expired
-- now, once: their rooms hear it, and they leave them.
local o = out_new(ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]))
local ghosts = {}
for _, room in ipairs(redis.call('SMEMBERS', P .. ':rooms')) do
  for _, id in ipairs(redis.call('ZRANGE', room_key(room), 0, -1)) do
    if redis.call('EXISTS', rk(id)) == 0 then ghosts[id] = true end
  end
end
local n = 0
for id in pairs(ghosts) do
  end_member(id, 'expired', o, tonumber(ARGV[5]))
  n = n + 1
end
local a = o:answer(1)
a[4] = n
return a
