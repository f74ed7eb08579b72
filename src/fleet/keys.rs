//! Redis key names. Every key of a room carries the hash tag `{room}`, so on Redis Cluster a
//! room's keys share one slot and each script (which touches one SKU's counters, the room's
//! request table, stream and counters) runs there.
//!
//! Why the room and not `{room:sku}`: docs/protocol.md makes `buy` idempotent on
//! `(room, user, req)` whatever the SKU, so the request table is per room, and the buy script
//! must see it together with the SKU's stock. Different rooms spread over the cluster; one
//! hot room stays on one shard (as one hot SKU would with a per-SKU tag).
//!
//! Ids never contain `{`, `}` or the unit separator (see [`crate::ids`]), so names cannot
//! collide.

use crate::ids::KEY_SEPARATOR;

/// Set of room ids (outside any room's slot; catalog changes only, always alone in a call).
pub const ROOMS: &str = "lh:rooms";
/// Set of hub ids that ever joined (for `livehub reconcile`; outside any room's slot, always
/// alone in a call).
pub const HUBS: &str = "lh:hubs";
/// Pub/sub channel of change notices: `room` or `room US sku`.
pub const CHANGES: &str = "lh:changes";

/// Hash: `title`.
pub fn room(room: &str) -> String {
    format!("lh:{{{room}}}:room")
}

/// List of the room's SKU ids in creation order.
pub fn sku_list(room: &str) -> String {
    format!("lh:{{{room}}}:skus")
}

/// Hash: `name price_fen limit opens closes total left sold_out_at` ("" for none).
pub fn sku(room: &str, sku: &str) -> String {
    format!("lh:{{{room}}}:sku:{sku}")
}

/// Hash: user → units held of the SKU (orders and tickets).
pub fn held(room: &str, sku: &str) -> String {
    format!("lh:{{{room}}}:held:{sku}")
}

/// Hash: `user US req` → the request's state (a ticket while pending, the ack when done).
pub fn requests(room: &str) -> String {
    format!("lh:{{{room}}}:req")
}

/// Set of the request keys of `hub`'s open tickets in the room.
pub fn pending(room: &str, hub: &str) -> String {
    format!("lh:{{{room}}}:pending:{hub}")
}

/// Stream of the room's published orders, every hub's.
pub fn orders(room: &str) -> String {
    format!("lh:{{{room}}}:orders")
}

/// Counter: the room-wide seq of the last published order.
pub fn seq(room: &str) -> String {
    format!("lh:{{{room}}}:seq")
}

/// Hash: hub → the last of its order seqs published to the stream.
pub fn published(room: &str) -> String {
    format!("lh:{{{room}}}:published")
}

/// Hash: sku → units of published orders.
pub fn sold(room: &str) -> String {
    format!("lh:{{{room}}}:sold")
}

/// Hash: order id → its status entry (`S|sku|user|qty|amount_fen|pay_by_ms|placed_ms|paid_ms`,
/// see `lua/claim.lua`), set when the order is published.
pub fn statuses(room: &str) -> String {
    format!("lh:{{{room}}}:status")
}

/// Hash: order id → the claim of the hub deciding a move of it (`hub|nonce|kind|payment_id`).
pub fn claims(room: &str) -> String {
    format!("lh:{{{room}}}:claims")
}

/// Hash: payment id → `P|order` (it paid the order), `L|order` (kept as a late payment) or
/// `C|order` (claimed by a move on its way).
pub fn payments(room: &str) -> String {
    format!("lh:{{{room}}}:payments")
}

/// Sorted set: unpaid order ids by `pay_by_ms`.
pub fn deadlines(room: &str) -> String {
    format!("lh:{{{room}}}:deadlines")
}

/// Hash: hub id → that hub's live counts of the room (JSON, [`super::live::Published`]).
pub fn live(room: &str) -> String {
    format!("lh:{{{room}}}:live")
}

/// Sorted set: the room's peaks across hubs, `viewers` and `online` ([`super::live`]).
pub fn peaks(room: &str) -> String {
    format!("lh:{{{room}}}:peaks")
}

/// String with a time to live: present while `hub` runs (it refreshes it every
/// [`crate::fleet::expiry::HEARTBEAT`]). Outside any room's slot.
pub fn alive(hub: &str) -> String {
    format!("lh:alive:{hub}")
}

/// The request table's field for `(user, req)`.
pub fn request_field(user: &str, req: &str) -> String {
    let mut k = String::with_capacity(user.len() + req.len() + 1);
    k.push_str(user);
    k.push(KEY_SEPARATOR);
    k.push_str(req);
    k
}

/// A change notice for the room, or for one SKU of it.
pub fn notice(room: &str, sku: Option<&str>) -> String {
    match sku {
        Some(s) => format!("{room}{KEY_SEPARATOR}{s}"),
        None => room.to_owned(),
    }
}

/// The room a change notice names.
pub fn notice_room(notice: &str) -> &str {
    notice.split(KEY_SEPARATOR).next().unwrap_or(notice)
}

/// The hash slot of a key (CRC16 of its hash tag, mod 16384), as Redis Cluster computes it.
pub fn slot(key: &str) -> u16 {
    let b = key.as_bytes();
    let tagged = b.iter().position(|&c| c == b'{').and_then(|s| {
        b[s + 1..]
            .iter()
            .position(|&c| c == b'}')
            .filter(|&len| len > 0)
            .map(|len| &b[s + 1..s + 1 + len])
    });
    crc16(tagged.unwrap_or(b)) % 16384
}

fn crc16(data: &[u8]) -> u16 {
    // CRC16-CCITT (XMODEM), the one Redis Cluster uses.
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= (byte as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_of_a_room_is_in_one_cluster_slot() {
        let room = "live:2024.11-11";
        let keys = [
            self::room(room),
            sku_list(room),
            sku(room, "A1"),
            sku(room, "B:2"),
            held(room, "A1"),
            requests(room),
            pending(room, "h1"),
            orders(room),
            seq(room),
            published(room),
            sold(room),
            statuses(room),
            claims(room),
            payments(room),
            deadlines(room),
            live(room),
            peaks(room),
        ];
        let s = slot(&keys[0]);
        for k in &keys {
            assert_eq!(slot(k), s, "{k}");
        }
        assert_ne!(slot(&sku("other", "A1")), s, "rooms spread over slots");
    }

    #[test]
    fn slots_match_redis_cluster() {
        // Values from the Redis Cluster specification (CLUSTER KEYSLOT).
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(slot("somekey"), 11058);
        assert_eq!(slot("foo{hash_tag}"), 2515);
        assert_eq!(slot("bar{hash_tag}"), 2515);
        // An empty tag is no tag: the whole key is hashed.
        assert_eq!(slot("foo{}{bar}"), crc16(b"foo{}{bar}") % 16384);
    }

    #[test]
    fn notices_name_their_room() {
        assert_eq!(notice_room(&notice("r:1", Some("A"))), "r:1");
        assert_eq!(notice_room(&notice("r:1", None)), "r:1");
    }
}
