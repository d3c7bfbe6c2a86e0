-- ARGV: P id node maxm maxb state presence_max
-- The session ended (`left`, or `expired`): its rooms hear it once, and it
-- leaves them. Idempotent: a second call finds nothing.
local o = out_new(ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]))
end_member(ARGV[2], ARGV[6], o, tonumber(ARGV[7]))
return o:answer(1)
