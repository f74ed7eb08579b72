-- Opens a sale now (a closed or scheduled sale reopens; a later close stays) or closes it now.
-- KEYS: 1 sku hash. ARGV: 1 "open" or "close", 2 now_ms, 3 change notice
-- Returns {"ok"} | {"not_found"}
if redis.call('EXISTS', KEYS[1]) == 0 then return {'not_found'} end
local now = tonumber(ARGV[2])
if ARGV[1] == 'open' then
  local closes = redis.call('HGET', KEYS[1], 'closes')
  if not closes or closes == '' or tonumber(closes) <= now then closes = '' end
  redis.call('HSET', KEYS[1], 'opens', ARGV[2], 'closes', closes)
else
  redis.call('HSET', KEYS[1], 'closes', ARGV[2])
end
redis.call('PUBLISH', 'lh:changes', ARGV[3])
return {'ok'}
