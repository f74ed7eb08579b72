-- A restock (delta > 0) or withdrawal (delta < 0); a withdrawal never takes more than is left.
-- KEYS: 1 sku hash. ARGV: 1 delta, 2 highest stock_total, 3 change notice
-- Returns {"ok"} | {"not_found"} | {"conflict", left} | {"too_much", total}
if redis.call('EXISTS', KEYS[1]) == 0 then return {'not_found'} end
local d = tonumber(ARGV[1])
local f = redis.call('HMGET', KEYS[1], 'total', 'left')
local total = tonumber(f[1])
local left = tonumber(f[2])
if d < 0 and left < -d then return {'conflict', string.format('%d', left)} end
if d > 0 and total + d > tonumber(ARGV[2]) then return {'too_much', string.format('%d', total)} end
redis.call('HSET', KEYS[1], 'total', string.format('%d', total + d), 'left', string.format('%d', left + d))
if d > 0 then redis.call('HSET', KEYS[1], 'sold_out_at', '') end
redis.call('PUBLISH', 'lh:changes', ARGV[3])
return {'ok'}
