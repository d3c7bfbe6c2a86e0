-- ARGV: P id node fence maxm maxb state skip_self presence_max
-- The session's link state changed (reconnecting, active): every room it
-- is in hears it, if the node still holds the session (fence ''": if the
-- session is an orphan, its node dead).
local id = ARGV[2]
local f = redis.call('HMGET', rk(id), 'fence', 'owner')
if not f[1] then return {-2, {}, {}} end
if ARGV[4] == '' then
  if f[2] ~= '' then return {-1, {}, {}} end
elseif f[1] ~= ARGV[4] then
  return {-1, {}, {}}
end
local o = out_new(ARGV[3], tonumber(ARGV[5]), tonumber(ARGV[6]))
if redis.call('HGET', mkey(id), 'state') == ARGV[7] then return o:answer(1) end
redis.call('HSET', mkey(id), 'state', ARGV[7])
local except = nil
if ARGV[8] == '1' then except = id end
local mj = member(id)
for _, room in ipairs(redis.call('SMEMBERS', srooms(id))) do
  o:room(room, o:payload(presence(room, mj)), except, tonumber(ARGV[9]))
end
return o:answer(1)
