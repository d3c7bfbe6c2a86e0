-- ARGV: P node max_messages max_bytes n (to payload)*n -> seq or 0 or -1 per message
local node, maxm, maxb = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local res = {}
for i = 0, tonumber(ARGV[5]) - 1 do
  res[#res + 1] = append(ARGV[6 + 2 * i], ARGV[7 + 2 * i], node, maxm, maxb)
end
return res
