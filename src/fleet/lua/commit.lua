-- Makes claimed moves take effect once the deciding hub's journal holds them: each order's
-- new status, the units and allowance an expiry, cancel or restocking refund gives back (only
-- that order's, once: only while the order still holds this exact claim), the payment id's
-- outcome, and the move appended to the room's stream for every hub's dashboards.
-- KEYS: 1 statuses, 2 claims, 3 payments, 4 deadlines (zset: order by pay_by_ms), 5 sold hash
--       (sku -> units), 6 stream, then n SKU hashes, then their n held hashes
-- ARGV: 1 ts_ms, 2 n, then 7 per order: order, claim, move (paid late cancel cancel_admin
--       expire refund refund_restock), payment_id, pay_amount_fen, paid_at_ms, k (1..n: its SKU)
-- The stream entry is {m = "order|move|ts_ms|sku|user|qty|amount_fen|pay_by_ms|placed_ms|
--   paid_ms|S before|payment_id|pay_amount_fen|paid_at_ms"}.
-- Returns the number of moves made.
local ts = ARGV[1]
local n = tonumber(ARGV[2])
local made = 0
local i = 3
while i + 6 <= #ARGV do
  local o, claim, move = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local pid = ARGV[i + 3]
  local k = tonumber(ARGV[i + 6])
  if redis.call('HGET', KEYS[2], o) == claim then
    redis.call('HDEL', KEYS[2], o)
    local entry = redis.call('HGET', KEYS[1], o)
    local f = {}
    for v in string.gmatch(entry .. '|', '([^|]*)|') do f[#f + 1] = v end
    local before = f[1]
    local sku, user, qty = f[2], f[3], tonumber(f[4])
    local paid_ms = f[8]
    local release = false
    if move == 'paid' then
      f[1] = 'P'
      f[8] = ts
      redis.call('HSET', KEYS[3], pid, 'P|' .. o)
    elseif move == 'late' then
      redis.call('HSET', KEYS[3], pid, 'L|' .. o)
    elseif move == 'cancel' or move == 'cancel_admin' then
      f[1] = 'C'
      release = true
    elseif move == 'expire' then
      f[1] = 'E'
      release = true
    elseif move == 'refund' or move == 'refund_restock' then
      f[1] = 'R'
      release = move == 'refund_restock'
    end
    if f[1] ~= 'U' then redis.call('ZREM', KEYS[4], o) end
    redis.call('HSET', KEYS[1], o, table.concat(f, '|'))
    if release then
      local sk, held = KEYS[6 + k], KEYS[6 + n + k]
      if redis.call('EXISTS', sk) == 1 then
        redis.call('HINCRBY', sk, 'left', qty)
        redis.call('HSET', sk, 'sold_out_at', '')
      end
      if redis.call('HINCRBY', held, user, -qty) <= 0 then redis.call('HDEL', held, user) end
      redis.call('HINCRBY', KEYS[5], sku, -qty)
    end
    redis.call('XADD', KEYS[6], '*', 'm', table.concat({o, move, ts, sku, user, f[4], f[5], f[6],
      f[7], paid_ms, before, pid, ARGV[i + 4], ARGV[i + 5]}, '|'))
    made = made + 1
  end
  i = i + 7
end
return made
