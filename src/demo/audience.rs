//! The demo's audience, as a video platform's adapter would report it: each simulated viewer's
//! `enter` (with where they came from) and `leave`, likes in bursts, comments, shares and
//! follows, and taps on product cards, more of them than orders. Sent through the same path
//! as `POST /api/rooms/{room}/audience` once its batch is checked
//! ([`crate::hub::Hub::ingest_events`]).

use std::sync::Arc;

use rand::Rng;

use crate::hub::Hub;
use crate::inventory::UserRef;
use crate::journal::{AudienceEvent, AudienceKind};
use crate::rooms::room::Room;

/// Where viewers come from, with their weights out of 100; `share` weighs more while the
/// flash sale is being announced (viewers share the link).
const SOURCES: [(&str, u32); 5] = [
    ("recommend", 45),
    ("follow", 20),
    ("share", 20),
    ("search", 10),
    ("ad", 5),
];

/// A room's simulated viewers: who watches now, named `{prefix}{n}` in the order they came.
pub(super) struct Viewers {
    prefix: &'static str,
    watching: Vec<UserRef>,
    /// The number of the last viewer who came.
    last: u64,
}

impl Viewers {
    pub(super) fn new(prefix: &'static str) -> Self {
        Viewers {
            prefix,
            watching: Vec::new(),
            last: 0,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.watching.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.watching.is_empty()
    }

    /// New viewers come until `target` watch; each enters `crowd` (more by a share link while
    /// `sharing`).
    pub(super) fn fill(
        &mut self,
        room: &Room,
        crowd: &mut Crowd,
        target: usize,
        now: i64,
        sharing: bool,
        sharers: &[&str],
    ) {
        while self.watching.len() < target {
            self.last += 1;
            let u = room.users.intern(&format!("{}{}", self.prefix, self.last));
            room.live.viewer_joined(&u.id);
            crowd.entered(&u.id, now, sharing, sharers);
            self.watching.push(u);
        }
    }

    /// A viewer drawn at random leaves, while more than ten watch.
    pub(super) fn leave_one(
        &mut self,
        room: &Room,
        crowd: &mut Crowd,
        now: i64,
        rng: &mut impl Rng,
    ) {
        if self.watching.len() > 10 {
            let i = rng.random_range(0..self.watching.len());
            crowd.left(&self.watching[i].id, now);
            self.watching.swap_remove(i);
            room.live.viewer_left();
        }
    }

    /// A viewer drawn at random.
    pub(super) fn pick(&self, rng: &mut impl Rng) -> Option<&UserRef> {
        (!self.watching.is_empty())
            .then(|| &self.watching[rng.random_range(0..self.watching.len())])
    }
}

/// A tick's events.
#[derive(Default)]
pub(super) struct Crowd {
    events: Vec<AudienceEvent>,
}

fn event(kind: AudienceKind, user: &str, ts_ms: i64) -> AudienceEvent {
    AudienceEvent {
        kind,
        user: user.into(),
        ts_ms,
        source: None,
        referrer: None,
        count: 1,
        sku: None,
    }
}

impl Crowd {
    /// `user` entered; `sharing`: the announcement is on, and shares bring more viewers.
    pub(super) fn entered(&mut self, user: &str, now: i64, sharing: bool, sharers: &[&str]) {
        let mut rng = rand::rng();
        let boost = if sharing { 40 } else { 0 };
        let mut roll = rng.random_range(0..100 + boost);
        let mut source = "share";
        for (s, w) in SOURCES {
            let w = if s == "share" { w + boost } else { w };
            if roll < w {
                source = s;
                break;
            }
            roll -= w;
        }
        let referrer = (source == "share").then(|| sharers[rng.random_range(0..sharers.len())]);
        self.events.push(AudienceEvent {
            source: Some(source.into()),
            referrer: referrer.map(Into::into),
            ..event(AudienceKind::Enter, user, now)
        });
    }

    /// `user` left.
    pub(super) fn left(&mut self, user: &str, now: i64) {
        self.events.push(event(AudienceKind::Leave, user, now));
    }

    /// `user` tapped the card of `sku`.
    pub(super) fn clicked(&mut self, user: &str, sku: &str, now: i64) {
        self.events.push(AudienceEvent {
            sku: Some(sku.into()),
            ..event(AudienceKind::Click, user, now)
        });
    }

    /// A tick's likes, comments, shares, follows and idle taps by the viewers `pick` draws;
    /// `excitement` (1 in a quiet moment) scales them, as a flash sale does.
    pub(super) fn interact(
        &mut self,
        mut pick: impl FnMut() -> Option<Arc<str>>,
        skus: &[&str],
        now: i64,
        excitement: f64,
    ) {
        let mut rng = rand::rng();
        let mut some = |per_tick: f64| {
            let n = per_tick * excitement;
            n as usize + usize::from(rng.random_bool(n.fract().clamp(0.0, 1.0)))
        };
        let (likes, comments, shares, follows, taps) =
            (some(2.0), some(0.4), some(0.08), some(0.05), some(0.6));
        let mut rng = rand::rng();
        for (kind, n) in [
            (AudienceKind::Like, likes),
            (AudienceKind::Comment, comments),
            (AudienceKind::Share, shares),
            (AudienceKind::Follow, follows),
            (AudienceKind::Click, taps),
        ] {
            for _ in 0..n {
                let Some(user) = pick() else { return };
                let mut e = event(kind, &user, now - rng.random_range(0..2000));
                match kind {
                    AudienceKind::Like => e.count = rng.random_range(1..=5),
                    AudienceKind::Click => {
                        e.sku = Some(skus[rng.random_range(0..skus.len())].into())
                    }
                    _ => {}
                }
                self.events.push(e);
            }
        }
    }

    /// Sends the tick's events, in a task of its own.
    pub(super) fn send(self, hub: &Hub, room: &Arc<Room>, now: i64) {
        if self.events.is_empty() {
            return;
        }
        let (hub2, room) = (hub.clone(), room.clone());
        hub.tasks().spawn(async move {
            if let Err(e) = hub2.ingest_events(&room, self.events, now).await {
                tracing::debug!(room = %room.id, error = ?e, "demo audience not taken");
            }
        });
    }
}
