-- Publishes one hub's journaled orders of one room, in that hub's seq order, exactly once:
-- each order marks its request done (the ack a repeat gets on any hub), gets the next
-- room-wide seq, is appended to the room's stream as one field and counted as sold, and gets
-- its status entry (and, unpaid, its deadline) for the moves of claim.lua and commit.lua.
-- KEYS: 1 published hash (hub -> last hub seq), 2 req hash, 3 stream, 4 room seq counter,
--       5 sold hash (sku -> units), 6 this hub's pending set, 7 statuses, 8 deadlines
-- ARGV: 1 hub, then 8 per order: hub_seq, req key, done state, sku, qty,
--       entry ("hub_seq|order|sku|user|req|qty|price_fen|amount_fen|ref|ts_ms|pay_by_ms"),
--       status entry (claim.lua), pay_by_ms ("" when paid on placement)
-- The stream entry is {o = "seq|hub|" .. entry}: one field is far cheaper to append and read
-- than twelve. Returns the number of orders appended (those at or below the last published
-- seq are skipped).
local hub = ARGV[1]
local last = tonumber(redis.call('HGET', KEYS[1], hub) or '0')
local n = 0
local i = 2
while i + 7 <= #ARGV do
  local hseq = tonumber(ARGV[i])
  if hseq > last then
    redis.call('HSET', KEYS[2], ARGV[i + 1], ARGV[i + 2])
    redis.call('SREM', KEYS[6], ARGV[i + 1])
    local seq = redis.call('INCR', KEYS[4])
    redis.call('XADD', KEYS[3], '*', 'o', seq .. '|' .. hub .. '|' .. ARGV[i + 5])
    redis.call('HINCRBY', KEYS[5], ARGV[i + 3], ARGV[i + 4])
    local order = string.match(ARGV[i + 5], '^[^|]*|([^|]*)|')
    redis.call('HSET', KEYS[7], order, ARGV[i + 6])
    if ARGV[i + 7] ~= '' then redis.call('ZADD', KEYS[8], ARGV[i + 7], order) end
    last = hseq
    n = n + 1
  end
  i = i + 8
end
redis.call('HSET', KEYS[1], hub, string.format('%d', last))
return n
