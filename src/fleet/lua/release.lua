-- Gives back a ticket whose order was not made durable: only if the request still holds
-- exactly this ticket, so a release is safe to repeat and never undoes another decision.
-- KEYS: 1 sku hash, 2 held hash, 3 req hash, 4 the ticket's hub's pending set
-- ARGV: 1 user, 2 req key, 3 ticket, 4 qty
-- Returns 1 when it gave the units back, 0 when the ticket was not there.
if redis.call('HGET', KEYS[3], ARGV[2]) ~= ARGV[3] then
  redis.call('SREM', KEYS[4], ARGV[2])
  return 0
end
redis.call('HDEL', KEYS[3], ARGV[2])
redis.call('SREM', KEYS[4], ARGV[2])
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HINCRBY', KEYS[1], 'left', ARGV[4])
  redis.call('HSET', KEYS[1], 'sold_out_at', '')
end
if redis.call('HINCRBY', KEYS[2], ARGV[1], -tonumber(ARGV[4])) <= 0 then
  redis.call('HDEL', KEYS[2], ARGV[1])
end
return 1
