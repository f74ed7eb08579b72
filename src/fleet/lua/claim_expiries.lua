-- Claims the expiry of many orders at once (claim.lua's "expire", for a deadline's batch).
-- KEYS: 1 statuses, 2 claims (as in claim.lua)
-- ARGV: 1 claim ("hub|nonce|expire|"), 2 now_ms, then the orders
-- Returns, per order in the same order: "c|" .. entry (claimed), "m" (another move is on its
-- way), "n" (unpaid, not due), "s" (no longer unpaid), "u" (no such order yet).
local out = {}
local now = tonumber(ARGV[2])
for i = 3, #ARGV do
  local o = ARGV[i]
  local entry = redis.call('HGET', KEYS[1], o)
  local r
  if not entry then
    r = 'u'
  elseif string.sub(entry, 1, 2) ~= 'U|' then
    r = 's'
  elseif redis.call('HEXISTS', KEYS[2], o) == 1 then
    r = 'm'
  else
    local pay_by = tonumber(string.match(entry, '^U|[^|]*|[^|]*|[^|]*|[^|]*|([^|]*)|'))
    if pay_by > now then
      r = 'n'
    else
      redis.call('HSET', KEYS[2], o, ARGV[1])
      r = 'c|' .. entry
    end
  end
  out[#out + 1] = r
end
return out
