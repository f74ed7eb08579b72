-- Creates a SKU (its stock is the initial stock) or updates it (the stock is left alone).
-- KEYS: 1 sku hash, 2 the room's SKU list
-- ARGV: 1 name, 2 price_fen, 3 stock, 4 limit ("" none), 5 opens ("" none), 6 closes ("" none),
--       7 sku id, 8 change notice, 9 pay_timeout_s ("" none)
-- Returns 1 when created, 0 when updated.
local created = 0
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'total', ARGV[3], 'left', ARGV[3], 'sold_out_at', '')
  redis.call('RPUSH', KEYS[2], ARGV[7])
  created = 1
end
redis.call('HSET', KEYS[1], 'name', ARGV[1], 'price_fen', ARGV[2], 'limit', ARGV[4],
  'opens', ARGV[5], 'closes', ARGV[6], 'pay_timeout', ARGV[9])
redis.call('PUBLISH', 'lh:changes', ARGV[8])
return created
