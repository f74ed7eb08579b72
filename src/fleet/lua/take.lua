-- One buy, atomically: the idempotency key, the SKU's existence, sale window, per-user limit
-- and stock are checked, and on success the stock and the user's allowance are taken and the
-- request is marked pending (a "ticket") until its order is journaled and published.
-- KEYS: 1 sku hash, 2 held hash (user -> units), 3 req hash (user US req -> state),
--       4 this hub's pending set (req keys of its tickets)
-- ARGV: 1 user, 2 req key, 3 qty, 4 now_ms, 5 ticket ("P|hub|nonce|sku|qty")
-- Returns {"seen", state} | {"unknown_sku"} | {code, left} |
--   {"ok", left, price_fen, pay_timeout_s ("" when paid on placement)}
local seen = redis.call('HGET', KEYS[3], ARGV[2])
if seen then return {'seen', seen} end
if redis.call('EXISTS', KEYS[1]) == 0 then return {'unknown_sku'} end
local f = redis.call('HMGET', KEYS[1], 'left', 'price_fen', 'limit', 'opens', 'closes', 'pay_timeout')
local left = tonumber(f[1])
local now = tonumber(ARGV[4])
local qty = tonumber(ARGV[3])
if f[5] and f[5] ~= '' and now >= tonumber(f[5]) then return {'closed', string.format('%d', left)} end
if f[4] and f[4] ~= '' and now < tonumber(f[4]) then return {'not_open', string.format('%d', left)} end
if f[3] and f[3] ~= '' then
  local held = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
  if held + qty > tonumber(f[3]) then return {'limit_exceeded', string.format('%d', left)} end
end
if left < qty then
  if left == 0 then return {'sold_out', '0'} end
  return {'insufficient_stock', string.format('%d', left)}
end
left = left - qty
redis.call('HSET', KEYS[1], 'left', string.format('%d', left))
if left == 0 then redis.call('HSET', KEYS[1], 'sold_out_at', ARGV[4]) end
redis.call('HINCRBY', KEYS[2], ARGV[1], qty)
redis.call('HSET', KEYS[3], ARGV[2], ARGV[5])
redis.call('SADD', KEYS[4], ARGV[2])
return {'ok', string.format('%d', left), f[2], f[6] or ''}
