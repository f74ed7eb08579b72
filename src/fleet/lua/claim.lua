-- Claims one order for a status move (payment, cancel, refund, expiry) decided by one hub,
-- before that hub journals it. The claim bars every other move of the order until the hub
-- commits it (commit.lua, once the move is durable) or aborts it (abort.lua); a hub that
-- crashed in between settles its claims at its next start against its journal.
-- KEYS: 1 statuses (order -> "S|sku|user|qty|amount_fen|pay_by_ms|placed_ms|paid_ms", S one of
--       U P E C R), 2 claims (order -> claim), 3 payments (payment_id -> "P|order" paid it,
--       "L|order" kept as late, "C|order" claimed)
-- ARGV: 1 order, 2 claim ("hub|nonce|kind|payment_id"), 3 kind (pay cancel refund expire),
--       4 user ("" for any), 5 payment_id, 6 amount_fen, 7 now_ms
-- Returns {"unknown"} | {"moving"} | {"not_due"} | {"reused", order}, or with the order's entry:
--   {"mismatch", entry} | {"paid", entry} (this payment paid it) | {"late_known", entry} (kept
--   as a late payment) | {"refused", entry} (not at the status the move needs) |
--   {"claimed", entry, move}
local entry = redis.call('HGET', KEYS[1], ARGV[1])
if not entry then return {'unknown'} end
local f = {}
for v in string.gmatch(entry .. '|', '([^|]*)|') do f[#f + 1] = v end
local s = f[1]
if ARGV[4] ~= '' and ARGV[4] ~= f[3] then return {'unknown'} end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return {'moving'} end
local kind = ARGV[3]
local move
if kind == 'pay' then
  local p = redis.call('HGET', KEYS[3], ARGV[5])
  if p then
    local k, o = string.match(p, '^(%a)|(.*)$')
    if o ~= ARGV[1] then return {'reused', o} end
    if k == 'P' then return {'paid', entry} end
    if k == 'L' then return {'late_known', entry} end
    return {'moving'}
  end
  if ARGV[6] ~= f[5] then return {'mismatch', entry} end
  if s == 'U' then move = 'paid' else move = 'late' end
  redis.call('HSET', KEYS[3], ARGV[5], 'C|' .. ARGV[1])
elseif kind == 'cancel' then
  if s ~= 'U' then return {'refused', entry} end
  move = 'cancel'
elseif kind == 'refund' then
  if s ~= 'P' then return {'refused', entry} end
  move = 'refund'
elseif kind == 'expire' then
  if s ~= 'U' then return {'refused', entry} end
  if tonumber(f[6]) > tonumber(ARGV[7]) then return {'not_due'} end
  move = 'expire'
else
  return redis.error_reply('unknown move ' .. kind)
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return {'claimed', entry, move}
