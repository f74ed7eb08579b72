-- Gives back claims whose moves were not made durable: only a claim the order still holds,
-- and a payment id only while it is claimed for that order.
-- KEYS: 1 claims, 2 payments. ARGV: 3 per order: order, claim, payment_id ("" for none)
-- Returns the number of claims given back.
local n = 0
local i = 1
while i + 2 <= #ARGV do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    redis.call('HDEL', KEYS[1], ARGV[i])
    n = n + 1
  end
  if ARGV[i + 2] ~= '' and redis.call('HGET', KEYS[2], ARGV[i + 2]) == 'C|' .. ARGV[i] then
    redis.call('HDEL', KEYS[2], ARGV[i + 2])
  end
  i = i + 3
end
return n
