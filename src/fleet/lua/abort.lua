-- Gives back claims whose moves were not made durable: only a claim the order still holds,
-- and with it the payment id it claimed. A claim no longer held leaves the payment id alone:
-- a repeated abort must not free the id of a later claim of the same order with the same
-- payment id, or that id could then pay a second order.
-- KEYS: 1 claims, 2 payments. ARGV: 3 per order: order, claim, payment_id ("" for none)
-- Returns the number of claims given back.
local n = 0
local i = 1
while i + 2 <= #ARGV do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    redis.call('HDEL', KEYS[1], ARGV[i])
    n = n + 1
    if ARGV[i + 2] ~= '' and redis.call('HGET', KEYS[2], ARGV[i + 2]) == 'C|' .. ARGV[i] then
      redis.call('HDEL', KEYS[2], ARGV[i + 2])
    end
  end
  i = i + 3
end
return n
