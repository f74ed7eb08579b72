//! A room's audience: every viewer the platform told of, interned to a number, with a few
//! bytes of state each, and the room's running figures. Memory is what bounds this: a big
//! stream has millions of viewers, so a viewer is a `u32`, their id is kept once in an arena
//! of bytes (no `String` per viewer, none per event), and their state is [`Viewer`].
//!
//! Sessions: `enter` opens one and `leave` closes it; the watch time is the sum of closed
//! sessions plus open ones up to now. Events of one viewer may come out of order (the
//! platform's adapter batches and retries): a `leave` dated before the open session's `enter`
//! is passed over, and a `leave` that came before its `enter` is kept until the `enter` comes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::Arc;

use hashbrown::HashTable;
use serde::{Deserialize, Serialize};

use crate::journal::{AudienceEvent, AudienceKind};

/// A viewer's number in the room.
pub type ViewerId = u32;

/// Sources a room tells apart; a viewer's source past these counts under [`OTHER_SOURCE`].
pub const MAX_SOURCES: usize = 64;
/// The source that later sources count as.
pub const OTHER_SOURCE: &str = "other";
/// Minutes the per-minute series keeps.
pub const MINUTES_KEPT: usize = 60;
const MINUTE_MS: i64 = 60_000;
/// The seed of the re-sent-event check's fingerprints: fixed, so a replay finds the same ones.
const DEDUP_SEED: u64 = 0x6c69_7665_6875_6221;
/// How long a re-sent event is recognised: events later than this are refused anyway.
const DEDUP_WINDOW_MS: i64 = crate::audience::batch::MAX_LATE_MS + 2 * MINUTE_MS;

/// Viewer ids kept once each: the bytes of every id in one arena, and a hash table of
/// viewer numbers that finds an id's number by comparing against the arena.
#[derive(Default)]
struct Interner {
    bytes: Vec<u8>,
    /// Where each viewer's id starts in `bytes`; it ends where the next starts.
    starts: Vec<u32>,
    table: HashTable<ViewerId>,
    hasher: foldhash::fast::FixedState,
}

impl Interner {
    fn id(&self, v: ViewerId) -> &str {
        let i = v as usize;
        let start = self.starts[i] as usize;
        let end = self
            .starts
            .get(i + 1)
            .map_or(self.bytes.len(), |e| *e as usize);
        std::str::from_utf8(&self.bytes[start..end]).expect("ids are UTF-8")
    }

    fn hash(&self, s: &str) -> u64 {
        self.hasher.hash_one(s)
    }

    fn get(&self, s: &str) -> Option<ViewerId> {
        let h = self.hash(s);
        self.table.find(h, |&v| self.id(v) == s).copied()
    }

    /// The viewer's number, and whether it is new.
    fn intern(&mut self, s: &str) -> (ViewerId, bool) {
        let h = self.hash(s);
        if let Some(&v) = self.table.find(h, |&v| self.id(v) == s) {
            return (v, false);
        }
        let v = self.starts.len() as ViewerId;
        self.starts.push(self.bytes.len() as u32);
        self.bytes.extend_from_slice(s.as_bytes());
        let Interner {
            table,
            starts,
            bytes,
            hasher,
        } = self;
        table.insert_unique(h, v, |&x| {
            let i = x as usize;
            let start = starts[i] as usize;
            let end = starts.get(i + 1).map_or(bytes.len(), |e| *e as usize);
            hasher.hash_one(std::str::from_utf8(&bytes[start..end]).expect("UTF-8"))
        });
        (v, true)
    }

    fn len(&self) -> usize {
        self.starts.len()
    }

    fn heap_bytes(&self) -> usize {
        self.bytes.capacity() + self.starts.capacity() * 4 + self.table.capacity() * 5
    }
}

/// Flags of a [`Viewer`].
const ENTERED: u8 = 1;
const CLICKED: u8 = 2;
/// A `leave` came with no session open: an `enter` dated before it closes at once.
const LEFT_EARLY: u8 = 4;

/// [`State`] as a journal snapshot keeps it (buyer sockets are live only, and not kept): the
/// state as snapshots before the review kept it, then the review's series.
#[derive(Serialize, Deserialize)]
struct Saved {
    before_review: SavedBeforeReview,
    /// `(minute start, most in a session, clicks)` per minute with an event.
    review: Vec<(i64, u64, u64)>,
    /// The earliest event's time.
    first_ms: Option<i64>,
}

/// [`State`] as journal snapshots kept it before the review (state version 3); read only on
/// its own.
#[derive(Serialize, Deserialize)]
struct SavedBeforeReview {
    base_ms: Option<i64>,
    ids: Vec<u8>,
    starts: Vec<u32>,
    /// Per viewer: entered, left, source, flags.
    viewers: Vec<(u32, u32, u8, u8)>,
    seen: Vec<(i64, Vec<u64>)>,
    sources: Vec<(String, u64)>,
    latest_ms: i64,
    counts: [u64; 10],
    minutes: Vec<(i64, u64, u64, u64)>,
    clicks: Vec<(String, u64)>,
}

/// One viewer's state, kept small (a test pins its size). Times are ms after the room's base ([`State::base_ms`]);
/// 0 is none.
#[derive(Debug, Default, Clone, Copy)]
struct Viewer {
    /// Start of the open session, or of the last one.
    entered: u32,
    /// End of the last session.
    left: u32,
    /// The source of the first `enter` that had one (index into the sources), `u8::MAX` none.
    source: u8,
    flags: u8,
    /// Buyer sockets open now (they count the viewer online too).
    sockets: u16,
}

impl Viewer {
    fn in_session(&self) -> bool {
        self.entered > self.left
    }

    fn online(&self) -> bool {
        self.in_session() || self.sockets > 0
    }
}

/// One minute of the review's series (docs/protocol.md, "Review"), by the events' `ts_ms`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReviewMinute {
    /// The most viewers in a session at once, as of each event of the minute once folded
    /// (buyer sockets left out: they are live only, and a replay would not see them).
    pub online: u64,
    /// `click` events.
    pub clicks: u64,
}

/// Counters of one minute.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Minute {
    /// Likes (with their counts).
    pub likes: u64,
    /// Comments.
    pub comments: u64,
    /// Shares.
    pub shares: u64,
}

/// The figures of a room's audience at one moment (docs/protocol.md, "Audience events").
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Figures {
    /// Viewers online now: in a session, or with a buyer socket open.
    pub online: u64,
    /// The most online at once.
    pub peak: u64,
    /// Viewers told of so far.
    pub unique: u64,
    /// Viewers who entered.
    pub entered: u64,
    /// Viewers who tapped a product card.
    pub clicked: u64,
    /// Mean watch time of the viewers who entered, in seconds.
    pub avg_watch_s: f64,
    /// Likes, comments, shares and follows so far.
    pub likes: u64,
    pub comments: u64,
    pub shares: u64,
    pub follows: u64,
    /// Unique viewers per source of their first `enter`.
    pub sources: Vec<(Arc<str>, u64)>,
    /// The last [`MINUTES_KEPT`] minutes that had any, oldest first: `(minute start, counts)`.
    pub per_minute: Vec<(i64, Minute)>,
    /// Click events per SKU.
    pub clicks: HashMap<Arc<str>, u64>,
}

/// The audience state of one room.
#[derive(Default)]
pub struct State {
    /// Times of viewers are kept as ms after this (the first event's time less the lateness
    /// window), so they fit a `u32` for the life of a stream.
    base_ms: Option<i64>,
    names: Interner,
    viewers: Vec<Viewer>,
    /// `(viewer, kind, ts_ms)` of the events counted lately, by minute, for re-sent events.
    seen: BTreeMap<i64, HashSet<u64, foldhash::fast::FixedState>>,
    sources: Vec<(Arc<str>, u64)>,
    /// The latest event's time: the clock the dedup window and the series follow.
    latest_ms: i64,
    in_session: u64,
    online: u64,
    peak: u64,
    entered: u64,
    clicked: u64,
    /// Watch time of closed sessions (ms).
    watched_ms: u64,
    /// Sum of the open sessions' starts (ms after base), for their watch time up to now.
    open_starts: u64,
    likes: u64,
    comments: u64,
    shares: u64,
    follows: u64,
    minutes: BTreeMap<i64, Minute>,
    clicks: HashMap<Arc<str>, u64>,
    /// Every minute with an event, for the review: unlike `minutes`, never trimmed.
    review: BTreeMap<i64, ReviewMinute>,
    /// The earliest event's time.
    first_ms: Option<i64>,
}

impl State {
    fn at(&self, ts_ms: i64) -> u32 {
        let base = self.base_ms.expect("set before the first event");
        (ts_ms - base).clamp(1, u32::MAX as i64) as u32
    }

    fn fingerprint(&self, v: ViewerId, kind: AudienceKind, ts_ms: i64) -> u64 {
        foldhash::fast::FixedState::with_seed(DEDUP_SEED).hash_one((v, kind, ts_ms))
    }

    /// Whether the event was counted already (a re-sent batch).
    pub fn is_seen(&self, e: &AudienceEvent) -> bool {
        let Some(v) = self.names.get(&e.user) else {
            return false;
        };
        let minute = e.ts_ms.div_euclid(MINUTE_MS);
        self.seen
            .get(&minute)
            .is_some_and(|s| s.contains(&self.fingerprint(v, e.kind, e.ts_ms)))
    }

    /// Counts one event, unless it was counted before. Returns whether it was new.
    pub fn add(&mut self, e: &AudienceEvent) -> bool {
        if self.base_ms.is_none() {
            self.base_ms = Some(e.ts_ms - 2 * DEDUP_WINDOW_MS);
        }
        let (v, new_viewer) = self.names.intern(&e.user);
        if new_viewer {
            self.viewers.push(Viewer {
                source: u8::MAX,
                ..Viewer::default()
            });
        }
        let fp = self.fingerprint(v, e.kind, e.ts_ms);
        let minute = e.ts_ms.div_euclid(MINUTE_MS);
        if !self.seen.entry(minute).or_default().insert(fp) {
            return false;
        }
        if e.ts_ms > self.latest_ms {
            self.latest_ms = e.ts_ms;
            let oldest = (e.ts_ms - DEDUP_WINDOW_MS).div_euclid(MINUTE_MS);
            self.seen = self.seen.split_off(&oldest);
        }
        let at = self.at(e.ts_ms);
        let minute_ms = minute * MINUTE_MS;
        match e.kind {
            AudienceKind::Enter => self.enter(v, at, e.source.as_deref()),
            AudienceKind::Leave => self.leave(v, at),
            AudienceKind::Like => {
                self.minutes.entry(minute_ms).or_default().likes += e.count as u64;
                self.likes += e.count as u64;
            }
            AudienceKind::Comment => {
                self.minutes.entry(minute_ms).or_default().comments += 1;
                self.comments += 1;
            }
            AudienceKind::Share => {
                self.minutes.entry(minute_ms).or_default().shares += 1;
                self.shares += 1;
            }
            AudienceKind::Follow => self.follows += 1,
            AudienceKind::Click => {
                let vw = &mut self.viewers[v as usize];
                if vw.flags & CLICKED == 0 {
                    vw.flags |= CLICKED;
                    self.clicked += 1;
                }
                if let Some(s) = &e.sku {
                    match self.clicks.get_mut(&**s) {
                        Some(n) => *n += 1,
                        None => {
                            self.clicks.insert(Arc::from(&**s), 1);
                        }
                    }
                }
            }
        }
        while self.minutes.len() > MINUTES_KEPT {
            self.minutes.pop_first();
        }
        let m = self.review.entry(minute_ms).or_default();
        m.online = m.online.max(self.in_session);
        if e.kind == AudienceKind::Click {
            m.clicks += 1;
        }
        self.first_ms = Some(self.first_ms.map_or(e.ts_ms, |f| f.min(e.ts_ms)));
        true
    }

    /// The review's series: every minute with an event, by minute start.
    pub fn review_minutes(&self) -> &BTreeMap<i64, ReviewMinute> {
        &self.review
    }

    /// The earliest and the latest event's times, once there is one.
    pub fn span_ms(&self) -> Option<(i64, i64)> {
        self.first_ms.map(|f| (f, self.latest_ms.max(f)))
    }

    fn source_index(&mut self, source: &str) -> u8 {
        if let Some(i) = self.sources.iter().position(|(s, _)| &**s == source) {
            return i as u8;
        }
        if self.sources.len() < MAX_SOURCES {
            self.sources.push((Arc::from(source), 0));
            return (self.sources.len() - 1) as u8;
        }
        self.source_index(OTHER_SOURCE)
    }

    /// Runs `f` on viewer `v` and keeps the online count and its peak in step.
    fn changing(&mut self, v: ViewerId, f: impl FnOnce(&mut Self)) {
        let was = self.viewers[v as usize].online();
        f(self);
        match (was, self.viewers[v as usize].online()) {
            (false, true) => {
                self.online += 1;
                self.peak = self.peak.max(self.online);
            }
            (true, false) => self.online -= 1,
            _ => {}
        }
    }

    /// A buyer socket of `user` opened (`true`) or closed. Not journaled: sockets are live
    /// only, and come back by themselves after a restart.
    pub fn socket(&mut self, user: &str, open: bool) {
        let (v, new_viewer) = self.names.intern(user);
        if new_viewer {
            self.viewers.push(Viewer {
                source: u8::MAX,
                ..Viewer::default()
            });
        }
        self.changing(v, |s| {
            let vw = &mut s.viewers[v as usize];
            vw.sockets = if open {
                vw.sockets.saturating_add(1)
            } else {
                vw.sockets.saturating_sub(1)
            };
        });
    }

    fn enter(&mut self, v: ViewerId, at: u32, source: Option<&str>) {
        self.changing(v, |s| s.enter_session(v, at, source));
    }

    fn leave(&mut self, v: ViewerId, at: u32) {
        self.changing(v, |s| s.leave_session(v, at));
    }

    fn enter_session(&mut self, v: ViewerId, at: u32, source: Option<&str>) {
        if let Some(s) = source {
            if self.viewers[v as usize].source == u8::MAX {
                let i = self.source_index(s);
                self.viewers[v as usize].source = i;
                self.sources[i as usize].1 += 1;
            }
        }
        let vw = &mut self.viewers[v as usize];
        if vw.flags & ENTERED == 0 {
            vw.flags |= ENTERED;
            self.entered += 1;
        }
        if vw.in_session() {
            // An earlier enter of the open session, come late: the session started then.
            if at < vw.entered {
                self.open_starts -= (vw.entered - at) as u64;
                vw.entered = at;
            }
        } else if vw.flags & LEFT_EARLY != 0 && at <= vw.left {
            // The enter of a session whose leave came first: it closes at once.
            vw.flags &= !LEFT_EARLY;
            self.watched_ms += (vw.left - at) as u64;
            vw.entered = at.min(vw.left);
        } else if at > vw.left {
            vw.entered = at;
            self.in_session += 1;
            self.open_starts += at as u64;
        }
    }

    fn leave_session(&mut self, v: ViewerId, at: u32) {
        let vw = &mut self.viewers[v as usize];
        if vw.in_session() {
            if at >= vw.entered {
                self.watched_ms += (at - vw.entered) as u64;
                self.open_starts -= vw.entered as u64;
                self.in_session -= 1;
                vw.left = at;
            }
        } else if at > vw.left {
            vw.left = at;
            vw.flags |= LEFT_EARLY;
        }
    }

    /// Whether `user` is in a session now.
    pub fn in_session(&self, user: &str) -> bool {
        self.names
            .get(user)
            .is_some_and(|v| self.viewers[v as usize].in_session())
    }

    /// Online now, the peak online, and the viewers told of: what a hub publishes to the fleet
    /// ([`crate::fleet::live`]), without building the other figures.
    pub fn live_counts(&self) -> (u64, u64, u64) {
        (self.online, self.peak, self.names.len() as u64)
    }

    /// The figures at `now_ms`.
    pub fn figures(&self, now_ms: i64) -> Figures {
        let open_ms = match self.base_ms {
            Some(base) => {
                let now = (now_ms - base).clamp(0, u32::MAX as i64) as u64;
                (self.in_session * now).saturating_sub(self.open_starts)
            }
            None => 0,
        };
        let avg_watch_s = if self.entered == 0 {
            0.0
        } else {
            (self.watched_ms + open_ms) as f64 / 1000.0 / self.entered as f64
        };
        Figures {
            online: self.online,
            peak: self.peak,
            unique: self.names.len() as u64,
            entered: self.entered,
            clicked: self.clicked,
            avg_watch_s,
            likes: self.likes,
            comments: self.comments,
            shares: self.shares,
            follows: self.follows,
            sources: self.sources.clone(),
            per_minute: self.minutes.iter().map(|(t, m)| (*t, *m)).collect(),
            clicks: self.clicks.clone(),
        }
    }

    /// The state as a journal snapshot keeps it (postcard).
    pub fn save(&self) -> Vec<u8> {
        let before_review = SavedBeforeReview {
            base_ms: self.base_ms,
            ids: self.names.bytes.clone(),
            starts: self.names.starts.clone(),
            viewers: self
                .viewers
                .iter()
                .map(|v| (v.entered, v.left, v.source, v.flags))
                .collect(),
            seen: self
                .seen
                .iter()
                .map(|(m, s)| (*m, s.iter().copied().collect()))
                .collect(),
            sources: self
                .sources
                .iter()
                .map(|(s, n)| (s.to_string(), *n))
                .collect(),
            latest_ms: self.latest_ms,
            counts: [
                self.in_session,
                self.entered,
                self.clicked,
                self.watched_ms,
                self.open_starts,
                self.likes,
                self.comments,
                self.shares,
                self.follows,
                self.peak,
            ],
            minutes: self
                .minutes
                .iter()
                .map(|(t, m)| (*t, m.likes, m.comments, m.shares))
                .collect(),
            clicks: self
                .clicks
                .iter()
                .map(|(s, n)| (s.to_string(), *n))
                .collect(),
        };
        let saved = Saved {
            before_review,
            review: self
                .review
                .iter()
                .map(|(t, m)| (*t, m.online, m.clicks))
                .collect(),
            first_ms: self.first_ms,
        };
        postcard::to_allocvec(&saved).expect("the audience encodes")
    }

    /// The state [`State::save`] kept; no buyer socket is open.
    pub fn restore(bytes: &[u8]) -> Result<State, String> {
        let saved: Saved =
            postcard::from_bytes(bytes).map_err(|e| format!("undecodable audience: {e}"))?;
        let mut s = Self::restore_saved(saved.before_review)?;
        s.review = saved
            .review
            .into_iter()
            .map(|(t, online, clicks)| (t, ReviewMinute { online, clicks }))
            .collect();
        s.first_ms = saved.first_ms;
        Ok(s)
    }

    /// The state a journal snapshot from before the review kept: the review's series starts
    /// empty (the events it held are not kept, only their counts).
    pub fn restore_before_review(bytes: &[u8]) -> Result<State, String> {
        let saved: SavedBeforeReview =
            postcard::from_bytes(bytes).map_err(|e| format!("undecodable audience: {e}"))?;
        Self::restore_saved(saved)
    }

    fn restore_saved(saved: SavedBeforeReview) -> Result<State, String> {
        if saved.viewers.len() != saved.starts.len()
            || saved.starts.iter().any(|&s| s as usize > saved.ids.len())
            || std::str::from_utf8(&saved.ids).is_err()
        {
            return Err("the audience's viewer ids do not add up".into());
        }
        let mut s = State {
            base_ms: saved.base_ms,
            ..State::default()
        };
        s.names.bytes = saved.ids;
        s.names.starts = saved.starts;
        for v in 0..s.names.starts.len() as ViewerId {
            let h = s.names.hash(s.names.id(v));
            let Interner {
                table,
                starts,
                bytes,
                hasher,
            } = &mut s.names;
            table.insert_unique(h, v, |&x| {
                let i = x as usize;
                let start = starts[i] as usize;
                let end = starts.get(i + 1).map_or(bytes.len(), |e| *e as usize);
                hasher.hash_one(std::str::from_utf8(&bytes[start..end]).expect("UTF-8"))
            });
        }
        s.viewers = saved
            .viewers
            .into_iter()
            .map(|(entered, left, source, flags)| Viewer {
                entered,
                left,
                source,
                flags,
                sockets: 0,
            })
            .collect();
        s.seen = saved
            .seen
            .into_iter()
            .map(|(m, v)| (m, v.into_iter().collect()))
            .collect();
        s.sources = saved
            .sources
            .into_iter()
            .map(|(n, c)| (Arc::from(n), c))
            .collect();
        s.latest_ms = saved.latest_ms;
        let [in_session, entered, clicked, watched_ms, open_starts, likes, comments, shares, follows, peak] =
            saved.counts;
        (
            s.in_session,
            s.entered,
            s.clicked,
            s.watched_ms,
            s.open_starts,
        ) = (in_session, entered, clicked, watched_ms, open_starts);
        (s.likes, s.comments, s.shares, s.follows, s.peak) =
            (likes, comments, shares, follows, peak);
        s.online = in_session;
        s.minutes = saved
            .minutes
            .into_iter()
            .map(|(t, likes, comments, shares)| {
                (
                    t,
                    Minute {
                        likes,
                        comments,
                        shares,
                    },
                )
            })
            .collect();
        s.clicks = saved
            .clicks
            .into_iter()
            .map(|(n, c)| (Arc::from(n), c))
            .collect();
        Ok(s)
    }

    /// Bytes held on the heap for the viewers (ids, table, state), for the memory benchmark.
    pub fn viewer_bytes(&self) -> usize {
        self.names.heap_bytes() + self.viewers.capacity() * std::mem::size_of::<Viewer>()
    }

    /// Bytes held for the re-sent-event check.
    pub fn dedup_bytes(&self) -> usize {
        self.seen.values().map(|s| s.capacity() * 9).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_700_000_000_000;

    fn ev(kind: AudienceKind, user: &str, ts_ms: i64) -> AudienceEvent {
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

    fn enter(user: &str, ts_ms: i64, source: &str) -> AudienceEvent {
        AudienceEvent {
            source: Some(source.into()),
            ..ev(AudienceKind::Enter, user, ts_ms)
        }
    }

    #[test]
    fn sessions_give_the_watch_time_in_any_order() {
        let mut s = State::default();
        // u1 watches 60 s, in order; u2's leave comes before its enter (30 s); u3 is still in.
        s.add(&enter("u1", T, "recommend"));
        s.add(&ev(AudienceKind::Leave, "u1", T + 60_000));
        s.add(&ev(AudienceKind::Leave, "u2", T + 40_000));
        assert_eq!(s.figures(T + 60_000).online, 0);
        s.add(&enter("u2", T + 10_000, "share"));
        s.add(&enter("u3", T + 50_000, "share"));
        let f = s.figures(T + 80_000);
        assert_eq!((f.online, f.entered, f.unique), (1, 3, 3));
        // 60 + 30 + 30 (u3 open since 50 s, now 80 s) over 3 viewers.
        assert!((f.avg_watch_s - 40.0).abs() < 1e-9, "{}", f.avg_watch_s);
        assert_eq!(
            f.sources,
            vec![(Arc::from("recommend"), 1), (Arc::from("share"), 2)]
        );
        // A leave dated before the open session's enter changes nothing; a re-enter while in
        // a session neither.
        s.add(&ev(AudienceKind::Leave, "u3", T + 45_000));
        s.add(&enter("u3", T + 70_000, "ad"));
        assert_eq!(s.figures(T + 80_000), f);
        // The session closes, and a new one opens later.
        s.add(&ev(AudienceKind::Leave, "u3", T + 80_000));
        s.add(&enter("u3", T + 90_000, "ad"));
        let g = s.figures(T + 100_000);
        assert_eq!(g.online, 1);
        assert_eq!(g.peak, 1, "online as the events came: never two at once");
        assert!((g.avg_watch_s - (60.0 + 30.0 + 40.0) / 3.0).abs() < 1e-9);
        assert_eq!(
            g.sources[1].1, 2,
            "a viewer counts under their first source only"
        );
    }

    #[test]
    fn buyer_sockets_count_online_with_sessions() {
        let mut s = State::default();
        s.socket("b1", true);
        s.socket("b1", true);
        s.add(&enter("b1", T, "ad"));
        s.add(&enter("u2", T, "ad"));
        assert_eq!((s.figures(T).online, s.figures(T).unique), (2, 2));
        s.add(&ev(AudienceKind::Leave, "b1", T + 1000));
        assert_eq!(s.figures(T).online, 2, "b1's sockets are still open");
        s.socket("b1", false);
        s.socket("b1", false);
        assert_eq!(s.figures(T).online, 1);
        assert_eq!(s.figures(T).peak, 2);
    }

    #[test]
    fn a_re_sent_event_is_counted_once() {
        let mut s = State::default();
        let like = AudienceEvent {
            count: 3,
            ..ev(AudienceKind::Like, "u1", T)
        };
        assert!(s.add(&like));
        assert!(s.is_seen(&like));
        assert!(!s.add(&like));
        assert!(s.add(&ev(AudienceKind::Like, "u1", T + 1)));
        assert!(s.add(&ev(AudienceKind::Comment, "u1", T)));
        let f = s.figures(T);
        assert_eq!((f.likes, f.comments), (4, 1));
        assert_eq!(f.per_minute.len(), 1);
        assert_eq!(f.per_minute[0].1.likes, 4);
    }

    #[test]
    fn late_events_land_in_their_minute_and_clicks_count_per_sku() {
        let mut s = State::default();
        s.add(&ev(AudienceKind::Share, "u1", T + 5 * MINUTE_MS));
        s.add(&ev(AudienceKind::Share, "u2", T));
        let click = |u: &str| AudienceEvent {
            sku: Some("A".into()),
            ..ev(AudienceKind::Click, u, T)
        };
        s.add(&click("u1"));
        s.add(&click("u1"));
        s.add(&AudienceEvent {
            ts_ms: T + 1,
            ..click("u1")
        });
        s.add(&click("u2"));
        let f = s.figures(T + 5 * MINUTE_MS);
        let minutes: Vec<(i64, u64)> = f.per_minute.iter().map(|(t, m)| (*t, m.shares)).collect();
        let m0 = T.div_euclid(MINUTE_MS) * MINUTE_MS;
        assert_eq!(minutes, vec![(m0, 1), (m0 + 5 * MINUTE_MS, 1)]);
        assert_eq!(f.clicks.get("A"), Some(&3));
        assert_eq!(f.clicked, 2);
    }

    #[test]
    fn a_saved_state_comes_back_the_same() {
        let mut s = State::default();
        s.add(&enter("u1", T, "share"));
        s.add(&AudienceEvent {
            sku: Some("A".into()),
            ..ev(AudienceKind::Click, "u1", T + 5)
        });
        s.add(&ev(AudienceKind::Like, "u2", T + 9));
        s.add(&enter("u2", T + 10, "ad"));
        s.add(&ev(AudienceKind::Leave, "u2", T + 20_000));
        let back = State::restore(&s.save()).unwrap();
        assert_eq!(back.figures(T + 30_000), s.figures(T + 30_000));
        let again = ev(AudienceKind::Like, "u2", T + 9);
        assert!(back.is_seen(&again), "the re-sent check survives");
        let mut back = back;
        assert!(!back.add(&again));
        assert!(back.add(&enter("u3", T + 11, "ad")));
        assert_eq!(back.figures(T + 30_000).unique, 3);
        assert!(State::restore(b"junk").is_err());
        assert_eq!(back.review_minutes(), s.review_minutes());
        assert_eq!(back.span_ms(), s.span_ms());
    }

    /// A snapshot written before the review (its audience without the series) still restores,
    /// with an empty series.
    #[test]
    fn a_state_saved_before_the_review_still_restores() {
        let mut s = State::default();
        s.add(&enter("u1", T, "share"));
        s.add(&ev(AudienceKind::Like, "u2", T + 9));
        let saved: Saved = postcard::from_bytes(&s.save()).unwrap();
        let old = postcard::to_allocvec(&saved.before_review).unwrap();
        let back = State::restore_before_review(&old).unwrap();
        assert_eq!(back.figures(T + 10), s.figures(T + 10));
        assert!(back.review_minutes().is_empty());
        assert!(State::restore(&old).is_err(), "the formats are told apart");
    }

    /// The review's series: per minute of the events' times, the most in a session after each
    /// event of the minute, and the clicks; sockets are not in it.
    #[test]
    fn the_review_series_follows_sessions_and_clicks() {
        let m0 = T.div_euclid(MINUTE_MS) * MINUTE_MS;
        let mut s = State::default();
        s.socket("b1", true);
        s.add(&enter("u1", m0 + 1_000, "share"));
        s.add(&enter("u2", m0 + 2_000, "share"));
        s.add(&ev(AudienceKind::Leave, "u1", m0 + 3_000));
        s.add(&AudienceEvent {
            sku: Some("A".into()),
            ..ev(AudienceKind::Click, "u2", m0 + MINUTE_MS + 5)
        });
        s.add(&ev(AudienceKind::Leave, "u2", m0 + 2 * MINUTE_MS));
        let r: Vec<(i64, u64, u64)> = s
            .review_minutes()
            .iter()
            .map(|(t, m)| (*t, m.online, m.clicks))
            .collect();
        assert_eq!(
            r,
            vec![
                (m0, 2, 0),
                (m0 + MINUTE_MS, 1, 1),
                (m0 + 2 * MINUTE_MS, 0, 0)
            ]
        );
        assert_eq!(s.span_ms(), Some((m0 + 1_000, m0 + 2 * MINUTE_MS)));
    }

    #[test]
    fn viewer_ids_are_interned_once() {
        let mut n = Interner::default();
        let ids: Vec<String> = (0..10_000).map(|i| format!("user-{i}")).collect();
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(n.intern(id), (i as ViewerId, true));
        }
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(n.intern(id), (i as ViewerId, false));
            assert_eq!(n.id(i as ViewerId), id);
        }
        assert_eq!(n.get("nobody"), None);
        assert_eq!(std::mem::size_of::<Viewer>(), 12);
    }
}
