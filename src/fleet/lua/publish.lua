-- Publishes one hub's journaled orders of one room, in that hub's seq order, exactly once:
-- each order marks its request done (the ack a repeat gets on any hub), gets the next
-- room-wide seq, is appended to the room's stream and counted as sold.
-- KEYS: 1 published hash (hub -> last hub seq), 2 req hash, 3 stream, 4 room seq counter,
--       5 sold hash (sku -> units), 6 this hub's pending set
-- ARGV: 1 hub, then 12 per order: hub_seq, req key, done state, order, sku, user, req, qty,
--       price_fen, amount_fen, ref ("" for none), ts_ms
-- Returns the number of orders appended (orders at or below the last published seq are skipped).
local hub = ARGV[1]
local last = tonumber(redis.call('HGET', KEYS[1], hub) or '0')
local n = 0
local i = 2
while i + 11 <= #ARGV do
  local hseq = tonumber(ARGV[i])
  if hseq > last then
    redis.call('HSET', KEYS[2], ARGV[i + 1], ARGV[i + 2])
    redis.call('SREM', KEYS[6], ARGV[i + 1])
    local seq = redis.call('INCR', KEYS[4])
    redis.call('XADD', KEYS[3], '*', 'seq', seq, 'hub', hub, 'hub_seq', ARGV[i],
      'order', ARGV[i + 3], 'sku', ARGV[i + 4], 'user', ARGV[i + 5], 'req', ARGV[i + 6],
      'qty', ARGV[i + 7], 'price_fen', ARGV[i + 8], 'amount_fen', ARGV[i + 9],
      'ref', ARGV[i + 10], 'ts_ms', ARGV[i + 11])
    redis.call('HINCRBY', KEYS[5], ARGV[i + 4], ARGV[i + 7])
    last = hseq
    n = n + 1
  end
  i = i + 12
end
redis.call('HSET', KEYS[1], hub, string.format('%d', last))
return n
