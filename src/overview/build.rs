//! The overview's figures. Each room's money, orders and audience come from its newest
//! dashboard snapshot, so they equal what the room's `/stats` says (at most a push interval
//! behind the orders, like it); whether it is live comes from the snapshot's last order and the
//! room's [`Activity`]. A pure function of those, so the rule for `live` is tested without
//! waiting five minutes.

use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use serde::{Deserialize, Serialize};

use crate::rooms::live::Activity;
use crate::rooms::room::Room;

/// A room is live while it had an order, an audience event or a buyer socket this recently
/// (or has a buyer socket open now).
pub const LIVE_WINDOW_MS: i64 = 5 * 60_000;

/// One room's line of the overview.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomLine {
    /// The room id.
    pub room: Arc<str>,
    /// Its title.
    pub title: String,
    /// Whether it is live ([`is_live`]).
    pub live: bool,
    /// Sales in fen: the snapshot's `gmv_fen`.
    pub gmv_fen: u64,
    /// Paid sales less refunds: the snapshot's `paid_gmv_fen`.
    pub paid_gmv_fen: u64,
    /// Orders: the snapshot's `orders`.
    pub orders: u64,
    /// The audience online now: the snapshot's `audience.online`.
    pub online: u64,
    /// When the latest order was placed; `None` with no order.
    pub last_order_ms: Option<i64>,
}

/// Every room's line at `ts_ms`, live rooms first, then by `gmv_fen` descending, then by room id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overview {
    /// When it was built (Unix ms).
    pub ts_ms: i64,
    /// One line per room.
    pub rooms: Vec<RoomLine>,
}

/// Whether a room is live at `now_ms`: a buyer socket open now, or an order, an audience event
/// or a buyer socket within the last [`LIVE_WINDOW_MS`]. Times ahead of `now_ms` (another
/// clock's, a moment ahead) count as recent.
pub fn is_live(now_ms: i64, last_order_ms: Option<i64>, activity: &Activity) -> bool {
    activity.sockets_open > 0
        || [
            last_order_ms,
            activity.last_audience_ms,
            activity.last_socket_ms,
        ]
        .into_iter()
        .flatten()
        .any(|t| now_ms.saturating_sub(t) < LIVE_WINDOW_MS)
}

/// One room's line at `now_ms`: zeros before the room's first snapshot.
pub fn line(room: &Room, now_ms: i64) -> RoomLine {
    let figures = room
        .feeds
        .snapshots
        .borrow()
        .as_ref()
        .map(|p| p.figures.clone());
    let (gmv_fen, paid_gmv_fen, orders, online, last_order_ms) = match &figures {
        Some(f) => (
            f.gmv_fen,
            f.paid_gmv_fen,
            f.orders,
            f.audience.online,
            f.last_order_ms,
        ),
        None => (0, 0, 0, 0, None),
    };
    RoomLine {
        room: room.id.clone(),
        title: room.title(),
        live: is_live(now_ms, last_order_ms, &room.live.activity()),
        gmv_fen,
        paid_gmv_fen,
        orders,
        online,
        last_order_ms,
    }
}

/// Sorts lines as the overview shows them: live first, then by `gmv_fen` descending, then by
/// room id, so the order is total and the page does not shuffle equal rooms.
pub fn sort(lines: &mut [RoomLine]) {
    lines.sort_unstable_by(|a, b| {
        b.live
            .cmp(&a.live)
            .then(b.gmv_fen.cmp(&a.gmv_fen))
            .then_with(|| a.room.cmp(&b.room))
    });
}

/// The overview of `rooms` at `now_ms`.
pub fn build<'a>(rooms: impl IntoIterator<Item = &'a Arc<Room>>, now_ms: i64) -> Overview {
    let mut lines: Vec<RoomLine> = rooms.into_iter().map(|r| line(r, now_ms)).collect();
    sort(&mut lines);
    Overview {
        ts_ms: now_ms,
        rooms: lines,
    }
}

#[derive(Serialize)]
struct Wire<'a> {
    op: &'static str,
    ts_ms: i64,
    rooms: &'a [RoomLine],
}

/// The overview as the socket sends it and `GET /api/overview` answers: its JSON with
/// `"op": "overview"` first.
pub fn encode(o: &Overview) -> Utf8Bytes {
    serde_json::to_string(&Wire {
        op: "overview",
        ts_ms: o.ts_ms,
        rooms: &o.rooms,
    })
    .expect("overviews serialize")
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    fn seen(order: Option<i64>, audience: Option<i64>, socket: Option<i64>, open: u64) -> bool {
        let a = Activity {
            sockets_open: open,
            last_socket_ms: socket,
            last_audience_ms: audience,
        };
        is_live(NOW, order, &a)
    }

    #[test]
    fn live_is_any_activity_within_five_minutes() {
        let recent = Some(NOW - LIVE_WINDOW_MS + 1);
        let old = Some(NOW - LIVE_WINDOW_MS);
        assert!(!seen(None, None, None, 0), "a room never active");
        assert!(seen(recent, None, None, 0), "an order 4:59.999 ago");
        assert!(seen(None, recent, None, 0), "audience 4:59.999 ago");
        assert!(seen(None, None, recent, 0), "a socket closed 4:59.999 ago");
        assert!(!seen(old, old, old, 0), "everything exactly 5 minutes ago");
        assert!(
            !seen(Some(NOW - 3_600_000), old, None, 0),
            "an hour and five minutes"
        );
        assert!(seen(old, old, old, 1), "a buyer socket open now counts");
        assert!(seen(None, None, None, 1), "even with nothing else");
        assert!(seen(Some(NOW + 2_000), None, None, 0), "a moment ahead");
        assert!(!seen(Some(i64::MIN), None, None, 0), "no overflow far back");
    }

    fn l(room: &str, live: bool, gmv_fen: u64) -> RoomLine {
        RoomLine {
            room: room.into(),
            title: String::new(),
            live,
            gmv_fen,
            paid_gmv_fen: 0,
            orders: 0,
            online: 0,
            last_order_ms: None,
        }
    }

    #[test]
    fn live_rooms_first_then_by_gmv_then_by_id() {
        let mut lines = vec![
            l("z", false, 900),
            l("b", true, 100),
            l("a", true, 100),
            l("c", true, 500),
            l("y", false, 0),
            l("x", false, 0),
        ];
        sort(&mut lines);
        let order: Vec<&str> = lines.iter().map(|l| &*l.room).collect();
        assert_eq!(order, ["c", "a", "b", "z", "x", "y"]);
    }

    #[test]
    fn a_room_without_a_snapshot_is_zeros_and_encodes_with_its_op() {
        let room = Arc::new(Room::new("r1".into(), "标题".into()));
        let o = build([&room], NOW);
        assert_eq!(
            o.rooms,
            vec![RoomLine {
                title: "标题".into(),
                ..l("r1", false, 0)
            }]
        );
        let v: serde_json::Value = serde_json::from_str(&encode(&o)).unwrap();
        assert_eq!(v["op"], "overview");
        assert_eq!(v["ts_ms"], NOW);
        assert_eq!(v["rooms"][0]["last_order_ms"], serde_json::Value::Null);
        assert_eq!(v["rooms"][0]["live"], false);
        room.live.viewer_joined(&Arc::from("u1"));
        assert!(build([&room], NOW).rooms[0].live, "a buyer socket open now");
    }
}
