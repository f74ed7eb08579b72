//! The simulated audience of the `audience` scenario, and the figures its accepted events must
//! give (docs/protocol.md, "Audience events").
//!
//! Viewers `v100000`, `v100001`, ... enter in three waves (as when a flash sale is announced),
//! each under a source (recommend, follow, share, search, ad; a few under none), interact while
//! they are in the room (likes, some with counts; comments; shares; one follow each at most;
//! taps on the room's product cards, the first SKUs most), and most leave after a while; some
//! come back once. Events are dated when their batch is made; a few interactions are dated up
//! to `late_max` earlier, and a few viewers' `enter` is held back until after their `leave` (an
//! adapter's retry), so events arrive late and out of order, on top of the batches of several
//! connections overtaking each other.
//!
//! The checks are exact, so the figures must not depend on the order in which the server
//! applies batches:
//! - every event's `(user, type, ts_ms)` is distinct: a viewer's on-time events are dated
//!   strictly later one after the other (even ms), late ones on odd ms, each checked against
//!   the late ones before it;
//! - a viewer's source rides on their first `enter` only;
//! - a viewer comes back only once every batch up to the one with their `leave` was answered,
//!   so the server has closed their first session before the second opens; a session's own
//!   `enter` and `leave` may arrive in either order (the server closes it either way).
//!
//! The figures then follow from the set of accepted events alone ([`Model`]).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};

use crate::checkout_buyer::Rng;

/// An audience event's `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Enter,
    Leave,
    Like,
    Comment,
    Share,
    Follow,
    Click,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Enter => "enter",
            Kind::Leave => "leave",
            Kind::Like => "like",
            Kind::Comment => "comment",
            Kind::Share => "share",
            Kind::Follow => "follow",
            Kind::Click => "click",
        }
    }
}

/// One event as the tool keeps it until its batch is answered (16 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ev {
    pub ts_ms: i64,
    /// The viewer's number: user id `v{100000 + user}`.
    pub user: u32,
    pub kind: Kind,
    /// A like's count; a click's SKU (index); an enter's source (index + 1, 0 for none).
    pub extra: u16,
}

/// Where viewers come from, and how many of them.
pub const SOURCES: [&str; 5] = ["recommend", "follow", "share", "search", "ad"];
const SOURCE_SHARES: [f64; 5] = [0.45, 0.2, 0.15, 0.1, 0.1];
/// Viewers whose enter names no source.
const NO_SOURCE: f64 = 0.05;
/// Waves of entries: (start, as a share of the run; share of the viewers).
const WAVES: [(f64, f64); 3] = [(0.0, 0.5), (0.3, 0.3), (0.6, 0.2)];
/// A wave's entries spread over this share of the run, most of them early.
const WAVE_SPREAD: f64 = 0.12;
/// How long a viewer stays, as a share of the run: at least the first, plus up to the second.
const STAY: (f64, f64) = (0.1, 0.6);
/// Viewers whose `enter` is held back until after their `leave`.
const HELD_ENTER: f64 = 0.03;
/// Viewers who leave and come back once, after a gap, for a second stay.
const RETURN: f64 = 0.15;
const RETURN_GAP: (f64, f64) = (0.03, 0.1);
const SECOND_STAY: (f64, f64) = (0.05, 0.4);
/// The interactions, by share: likes lead, as on any live stream.
const MIX: [(Kind, f64); 5] = [
    (Kind::Like, 0.52),
    (Kind::Comment, 0.18),
    (Kind::Click, 0.17),
    (Kind::Share, 0.07),
    (Kind::Follow, 0.06),
];
/// Likes sent with a count (2 to 30; the rest count 1).
const COUNTED_LIKES: f64 = 0.3;
/// A viewer's on-time events run ahead of the clock by at most this (then another viewer acts).
const AHEAD_MS: i64 = 1_000;
/// Late events are at least this late.
const LATE_MIN_MS: i64 = 1_000;

/// A [`Model`]'s base: this long before the run starts, earlier than any event's time.
pub const BASE_BEFORE_MS: i64 = 15 * 60_000;
/// The first viewer's number in the ids.
const ID_BASE: u64 = 100_000;

/// Viewer `u`'s user id.
#[cfg(test)]
pub fn user_id(u: u32) -> String {
    format!("v{}", ID_BASE + u as u64)
}

fn push_int(out: &mut Vec<u8>, n: i64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let neg = n < 0;
    let mut v = n.unsigned_abs();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if neg {
        out.push(b'-');
    }
    out.extend_from_slice(&buf[i..]);
}

fn pick(rng: &mut Rng, shares: impl Iterator<Item = f64>) -> usize {
    let x = rng.unit();
    let mut acc = 0.0;
    let mut last = 0;
    for (i, s) in shares.enumerate() {
        acc += s;
        last = i;
        if x < acc {
            return i;
        }
    }
    last
}

fn below(rng: &mut Rng, n: u64) -> u64 {
    rng.next_u64() % n.max(1)
}

/// Steps of a viewer's life, as scheduled.
const STEP_ENTER: u8 = 0;
const STEP_LEAVE: u8 = 1;
const STEP_RETURN: u8 = 2;

/// Viewer flags.
const ONLINE: u8 = 1;
const FOLLOWED: u8 = 2;
const RETURNED: u8 = 4;

#[derive(Debug, Clone, Copy)]
struct Viewer {
    /// The latest on-time `ts_ms` given to this viewer.
    last_ts: i64,
    /// Position in [`Generator::online`] while online.
    pos: u32,
    flags: u8,
    /// The batch that carried the viewer's last `leave`.
    left_in: u64,
}

/// What the generator is told to make.
#[derive(Debug, Clone)]
pub struct Params {
    pub viewers: u32,
    /// Fresh batches in the run (the waves and stays are shares of them).
    pub batches: u64,
    /// Events a batch at most.
    pub batch: usize,
    /// The room's SKUs, in order of popularity.
    pub skus: Vec<String>,
    pub late_share: f64,
    pub late_max_ms: i64,
    pub seed: u64,
}

/// Makes the run's batches, one after the other.
pub struct Generator {
    p: Params,
    rng: Rng,
    users: Vec<Viewer>,
    online: Vec<u32>,
    /// (batch, viewer, step), soonest first.
    schedule: BinaryHeap<Reverse<(u64, u32, u8)>>,
    /// Enters held back, until their viewer's leave is made.
    held: HashMap<u32, Ev>,
    /// Held enters to send, each from its batch on.
    releases: Vec<(u64, Ev)>,
    late_keys: HashSet<(u32, Kind, i64)>,
    sku_shares: Vec<f64>,
    /// The next batch's number.
    k: u64,
}

impl Generator {
    pub fn new(p: Params) -> Generator {
        let mut rng = Rng::new(p.seed, 0);
        let mut schedule = BinaryHeap::with_capacity(p.viewers as usize);
        for u in 0..p.viewers {
            let (start, _) = WAVES[pick(&mut rng, WAVES.iter().map(|w| w.1))];
            let y = rng.unit();
            let at = ((start + WAVE_SPREAD * y * y) * p.batches as f64) as u64;
            schedule.push(Reverse((
                at.min(p.batches.saturating_sub(1)),
                u,
                STEP_ENTER,
            )));
        }
        // Popularity falls with the SKU's rank (1, 1/2, 1/3, ...).
        let weights: Vec<f64> = (0..p.skus.len()).map(|i| 1.0 / (i + 1) as f64).collect();
        let total: f64 = weights.iter().sum();
        Generator {
            users: vec![
                Viewer {
                    last_ts: 0,
                    pos: u32::MAX,
                    flags: 0,
                    left_in: u64::MAX,
                };
                p.viewers as usize
            ],
            online: Vec::new(),
            schedule,
            held: HashMap::new(),
            releases: Vec::new(),
            late_keys: HashSet::new(),
            sku_shares: weights.iter().map(|w| w / total).collect(),
            rng,
            k: 0,
            p,
        }
    }

    /// Viewers in a session now, by the generator's own account.
    pub fn online(&self) -> usize {
        self.online.len()
    }

    /// The next batch's events, dated by `now_ms`; `answered` is how many batches from the
    /// first are all answered 200 (a viewer comes back only after that covers their leave).
    /// `None` once the run's batches are made.
    pub fn next_batch(&mut self, now_ms: i64, answered: u64) -> Option<Vec<Ev>> {
        if self.k >= self.p.batches {
            return None;
        }
        let k = self.k;
        self.k += 1;
        if k % 256 == 0 {
            // Late events are never dated before this, so older keys cannot repeat.
            let oldest = now_ms - self.p.late_max_ms - 60_000;
            self.late_keys.retain(|&(_, _, t)| t >= oldest);
        }
        let mut evs = Vec::with_capacity(self.p.batch);
        let mut i = 0;
        while i < self.releases.len() && evs.len() < self.p.batch {
            if self.releases[i].0 <= k {
                evs.push(self.releases.swap_remove(i).1);
            } else {
                i += 1;
            }
        }
        while let Some(&Reverse((at, u, step))) = self.schedule.peek() {
            if at > k || evs.len() >= self.p.batch {
                break;
            }
            self.schedule.pop();
            match step {
                STEP_ENTER => self.enter(k, u, now_ms, &mut evs),
                STEP_LEAVE => self.leave(k, u, now_ms, &mut evs),
                _ => self.come_back(k, u, now_ms, answered, &mut evs),
            }
        }
        let mut misses = 0;
        while evs.len() < self.p.batch && !self.online.is_empty() && misses < 16 {
            let u = self.online[below(&mut self.rng, self.online.len() as u64) as usize];
            match self.interaction(u, now_ms) {
                Some(e) => evs.push(e),
                None => misses += 1,
            }
        }
        Some(evs)
    }

    fn on_time(&mut self, u: u32, now_ms: i64) -> i64 {
        let v = &mut self.users[u as usize];
        let t = (now_ms & !1).max(v.last_ts + 2);
        v.last_ts = t;
        t
    }

    fn go_online(&mut self, u: u32) {
        let v = &mut self.users[u as usize];
        v.flags |= ONLINE;
        v.pos = self.online.len() as u32;
        self.online.push(u);
    }

    fn go_offline(&mut self, u: u32) {
        let pos = self.users[u as usize].pos as usize;
        self.online.swap_remove(pos);
        if let Some(&moved) = self.online.get(pos) {
            self.users[moved as usize].pos = pos as u32;
        }
        let v = &mut self.users[u as usize];
        v.flags &= !ONLINE;
        v.pos = u32::MAX;
    }

    fn share_of_run(&self, (min, range): (f64, f64), x: f64) -> u64 {
        ((min + range * x) * self.p.batches as f64) as u64 + 1
    }

    fn enter(&mut self, k: u64, u: u32, now_ms: i64, evs: &mut Vec<Ev>) {
        let ts = self.on_time(u, now_ms);
        let source = if self.rng.unit() < NO_SOURCE {
            0
        } else {
            pick(&mut self.rng, SOURCE_SHARES.iter().copied()) as u16 + 1
        };
        let e = Ev {
            ts_ms: ts,
            user: u,
            kind: Kind::Enter,
            extra: source,
        };
        self.go_online(u);
        let x = self.rng.unit();
        let leave_at = k + self.share_of_run(STAY, x);
        if leave_at < self.p.batches {
            self.schedule.push(Reverse((leave_at, u, STEP_LEAVE)));
            if self.rng.unit() < HELD_ENTER {
                self.held.insert(u, e);
                return;
            }
        }
        evs.push(e);
    }

    fn leave(&mut self, k: u64, u: u32, now_ms: i64, evs: &mut Vec<Ev>) {
        if self.users[u as usize].flags & ONLINE == 0 {
            return;
        }
        let ts = self.on_time(u, now_ms);
        self.go_offline(u);
        self.users[u as usize].left_in = k;
        evs.push(Ev {
            ts_ms: ts,
            user: u,
            kind: Kind::Leave,
            extra: 0,
        });
        let last = self.p.batches.saturating_sub(1);
        if let Some(e) = self.held.remove(&u) {
            let at = k + 1 + below(&mut self.rng, 3);
            self.releases.push((at.min(last), e));
        } else if self.users[u as usize].flags & RETURNED == 0 && self.rng.unit() < RETURN {
            let x = self.rng.unit();
            let at = k + self.share_of_run(RETURN_GAP, x);
            if at < self.p.batches {
                self.schedule.push(Reverse((at, u, STEP_RETURN)));
            }
        }
    }

    fn come_back(&mut self, k: u64, u: u32, now_ms: i64, answered: u64, evs: &mut Vec<Ev>) {
        if answered <= self.users[u as usize].left_in {
            // The first session may not be closed on the server yet: try the next batch.
            if k + 1 < self.p.batches {
                self.schedule.push(Reverse((k + 1, u, STEP_RETURN)));
            }
            return;
        }
        let ts = self.on_time(u, now_ms);
        self.go_online(u);
        self.users[u as usize].flags |= RETURNED;
        evs.push(Ev {
            ts_ms: ts,
            user: u,
            kind: Kind::Enter,
            extra: 0,
        });
        let x = self.rng.unit();
        let at = k + self.share_of_run(SECOND_STAY, x);
        if at < self.p.batches {
            self.schedule.push(Reverse((at, u, STEP_LEAVE)));
        }
    }

    fn interaction(&mut self, u: u32, now_ms: i64) -> Option<Ev> {
        let mut kind = MIX[pick(&mut self.rng, MIX.iter().map(|m| m.1))].0;
        if kind == Kind::Follow && self.users[u as usize].flags & FOLLOWED != 0 {
            kind = Kind::Like;
        }
        let extra = match kind {
            Kind::Like if self.rng.unit() < COUNTED_LIKES => 2 + below(&mut self.rng, 29) as u16,
            Kind::Like => 1,
            Kind::Click => pick(&mut self.rng, self.sku_shares.iter().copied()) as u16,
            _ => 0,
        };
        let ts = if self.rng.unit() < self.p.late_share {
            let span = (self.p.late_max_ms - LATE_MIN_MS).max(1) as u64;
            let mut t = (now_ms - LATE_MIN_MS - below(&mut self.rng, span) as i64) | 1;
            while !self.late_keys.insert((u, kind, t)) {
                t += 2;
            }
            t
        } else {
            let v = &self.users[u as usize];
            if (now_ms & !1).max(v.last_ts + 2) > now_ms + AHEAD_MS {
                return None;
            }
            self.on_time(u, now_ms)
        };
        if kind == Kind::Follow {
            self.users[u as usize].flags |= FOLLOWED;
        }
        Some(Ev {
            ts_ms: ts,
            user: u,
            kind,
            extra,
        })
    }

    /// Writes `evs` as the JSON array the endpoint takes.
    pub fn write_json(&self, evs: &[Ev], out: &mut Vec<u8>) {
        write_json(evs, &self.p.skus, self.p.viewers, out);
    }
}

/// Writes `evs` as the JSON array `POST .../audience` takes.
pub fn write_json(evs: &[Ev], skus: &[String], viewers: u32, out: &mut Vec<u8>) {
    out.push(b'[');
    for (i, e) in evs.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"type\":\"");
        out.extend_from_slice(e.kind.name().as_bytes());
        out.extend_from_slice(b"\",\"user\":\"v");
        push_int(out, (ID_BASE + e.user as u64) as i64);
        out.extend_from_slice(b"\",\"ts_ms\":");
        push_int(out, e.ts_ms);
        match e.kind {
            Kind::Enter if e.extra > 0 => {
                let source = SOURCES[e.extra as usize - 1];
                out.extend_from_slice(b",\"source\":\"");
                out.extend_from_slice(source.as_bytes());
                out.push(b'"');
                if source == "share" {
                    // Who shared the stream: another viewer.
                    let by = (e.user as u64 * 7_919 + 1) % viewers.max(1) as u64;
                    out.extend_from_slice(b",\"ref\":\"v");
                    push_int(out, (ID_BASE + by) as i64);
                    out.push(b'"');
                }
            }
            Kind::Like if e.extra > 1 => {
                out.extend_from_slice(b",\"count\":");
                push_int(out, e.extra as i64);
            }
            Kind::Click => {
                out.extend_from_slice(b",\"sku\":\"");
                out.extend_from_slice(skus[e.extra as usize].as_bytes());
                out.push(b'"');
            }
            _ => {}
        }
        out.push(b'}');
    }
    out.push(b']');
}

/// A batch made bad on purpose: good events of viewers nobody else names (`x<n>-<i>`), and
/// one bad event.
pub struct Bad {
    pub body: Vec<u8>,
    /// The bad event's index, and the field the 400 must name.
    pub index: usize,
    pub field: &'static str,
    pub what: &'static str,
}

/// Events of a bad batch.
const BAD_LEN: usize = 40;

/// The `n`-th bad batch, dated by `now_ms`.
pub fn bad_batch(n: u64, now_ms: i64) -> Bad {
    let index = 3 + (n as usize * 13) % (BAD_LEN - 4);
    let (what, field) = match n % 5 {
        0 => ("a click on a SKU the room does not have", "sku"),
        1 => ("an event 11 minutes late", "ts_ms"),
        2 => ("an unknown type", "type"),
        3 => ("a like with count 0", "count"),
        _ => ("an event a minute in the future", "ts_ms"),
    };
    let mut events = Vec::with_capacity(BAD_LEN);
    for i in 0..BAD_LEN {
        let user = format!("x{n}-{i}");
        let e = if i == index {
            match n % 5 {
                0 => format!(
                    r#"{{"type":"click","user":"{user}","ts_ms":{now_ms},"sku":"NO-SUCH-SKU"}}"#
                ),
                1 => format!(
                    r#"{{"type":"like","user":"{user}","ts_ms":{}}}"#,
                    now_ms - 11 * 60_000
                ),
                2 => format!(r#"{{"type":"wave","user":"{user}","ts_ms":{now_ms}}}"#),
                3 => format!(r#"{{"type":"like","user":"{user}","ts_ms":{now_ms},"count":0}}"#),
                _ => format!(
                    r#"{{"type":"comment","user":"{user}","ts_ms":{}}}"#,
                    now_ms + 60_000
                ),
            }
        } else if i % 2 == 0 {
            format!(r#"{{"type":"enter","user":"{user}","ts_ms":{now_ms},"source":"ad"}}"#)
        } else {
            format!(r#"{{"type":"like","user":"{user}","ts_ms":{now_ms},"count":7}}"#)
        };
        events.push(e);
    }
    Bad {
        body: format!("[{}]", events.join(",")).into_bytes(),
        index,
        field,
        what,
    }
}

/// Accepted-event flags of a viewer.
const SEEN: u8 = 1;
const ENTERED: u8 = 2;
const CLICKED: u8 = 4;

/// A viewer's accepted events, as far as the figures need them.
#[derive(Debug, Clone, Copy, Default)]
struct Acc {
    flags: u8,
    n: u8,
    /// Session events: (`ts_ms` − the model's base) × 2, + 1 for an enter.
    sessions: [u64; 4],
}

/// The figures the accepted events give, folded batch by batch as they are answered.
pub struct Model {
    users: Vec<Acc>,
    skus: Vec<String>,
    unique: u64,
    entered: u64,
    clicked: u64,
    likes: u64,
    comments: u64,
    shares: u64,
    follows: u64,
    sources: [u64; SOURCES.len()],
    clicks: Vec<u64>,
    /// Minute start → likes, comments, shares (a minute of any event is listed).
    minutes: BTreeMap<i64, [u64; 3]>,
    /// Session events over the 4 a viewer may have (a bug of this tool if ever non-zero).
    overflow: u64,
    base_ms: i64,
}

/// What the snapshot's audience figures must be.
#[derive(Debug, Clone, PartialEq)]
pub struct Expected {
    /// Viewers named by an accepted event.
    pub unique: u64,
    pub entered: u64,
    pub clicked: u64,
    pub likes: u64,
    pub comments: u64,
    pub shares: u64,
    pub follows: u64,
    /// Viewers in a session (an enter with no later leave).
    pub online: u64,
    /// Closed sessions' time plus open ones' up to `now_ms`, ms.
    pub watched_ms: u64,
    /// Viewers by the source of their enter (sources with none left out).
    pub sources: BTreeMap<String, u64>,
    /// Click events by SKU.
    pub clicks: BTreeMap<String, u64>,
    /// Minute start → likes, comments, shares; minutes with none of them left out.
    pub per_minute: BTreeMap<i64, [u64; 3]>,
}

impl Expected {
    /// `avg_watch_s` as the snapshot gives it (to 0.1 s).
    pub fn avg_watch_s(&self) -> f64 {
        if self.entered == 0 {
            return 0.0;
        }
        let s = self.watched_ms as f64 / 1000.0 / self.entered as f64;
        (s * 10.0).round() / 10.0
    }
}

impl Model {
    /// A model for `viewers`; `base_ms` is earlier than any event's time.
    pub fn new(viewers: u32, skus: Vec<String>, base_ms: i64) -> Model {
        Model {
            users: vec![Acc::default(); viewers as usize],
            clicks: vec![0; skus.len()],
            skus,
            unique: 0,
            entered: 0,
            clicked: 0,
            likes: 0,
            comments: 0,
            shares: 0,
            follows: 0,
            sources: [0; SOURCES.len()],
            minutes: BTreeMap::new(),
            overflow: 0,
            base_ms,
        }
    }

    /// Session events that did not fit (0 unless the generator broke its own rules).
    pub fn overflow(&self) -> u64 {
        self.overflow
    }

    /// Counts a batch the server accepted.
    pub fn fold(&mut self, evs: &[Ev]) {
        for e in evs {
            let a = &mut self.users[e.user as usize];
            if a.flags & SEEN == 0 {
                a.flags |= SEEN;
                self.unique += 1;
            }
            let m = self
                .minutes
                .entry(e.ts_ms.div_euclid(60_000) * 60_000)
                .or_default();
            match e.kind {
                Kind::Enter | Kind::Leave => {
                    if e.kind == Kind::Enter {
                        if a.flags & ENTERED == 0 {
                            a.flags |= ENTERED;
                            self.entered += 1;
                        }
                        if e.extra > 0 {
                            self.sources[e.extra as usize - 1] += 1;
                        }
                    }
                    if (a.n as usize) < a.sessions.len() {
                        let t = (e.ts_ms - self.base_ms).max(0) as u64;
                        a.sessions[a.n as usize] = t * 2 + u64::from(e.kind == Kind::Enter);
                        a.n += 1;
                    } else {
                        self.overflow += 1;
                    }
                }
                Kind::Like => {
                    self.likes += e.extra as u64;
                    m[0] += e.extra as u64;
                }
                Kind::Comment => {
                    self.comments += 1;
                    m[1] += 1;
                }
                Kind::Share => {
                    self.shares += 1;
                    m[2] += 1;
                }
                Kind::Follow => self.follows += 1,
                Kind::Click => {
                    self.clicks[e.extra as usize] += 1;
                    if a.flags & CLICKED == 0 {
                        a.flags |= CLICKED;
                        self.clicked += 1;
                    }
                }
            }
        }
    }

    /// The figures at `now_ms`: each viewer's sessions in time order, an enter opening one
    /// (unless one is open) and a later leave closing it.
    pub fn expected(&self, now_ms: i64) -> Expected {
        let now = (now_ms - self.base_ms).max(0) as u64;
        let (mut online, mut watched) = (0u64, 0u64);
        for a in &self.users {
            let mut s = a.sessions;
            let s = &mut s[..a.n as usize];
            s.sort_unstable();
            let mut open: Option<u64> = None;
            for &x in s.iter() {
                let (t, enter) = (x / 2, x % 2 == 1);
                match (enter, open) {
                    (true, None) => open = Some(t),
                    (false, Some(o)) if t >= o => {
                        watched += t - o;
                        open = None;
                    }
                    _ => {}
                }
            }
            if let Some(o) = open {
                online += 1;
                watched += now.saturating_sub(o);
            }
        }
        Expected {
            unique: self.unique,
            entered: self.entered,
            clicked: self.clicked,
            likes: self.likes,
            comments: self.comments,
            shares: self.shares,
            follows: self.follows,
            online,
            watched_ms: watched,
            sources: SOURCES
                .iter()
                .zip(self.sources)
                .filter(|(_, n)| *n > 0)
                .map(|(s, n)| (s.to_string(), n))
                .collect(),
            clicks: self
                .skus
                .iter()
                .cloned()
                .zip(self.clicks.iter().copied())
                .collect(),
            per_minute: self
                .minutes
                .iter()
                .filter(|(_, m)| m.iter().any(|&x| x > 0))
                .map(|(t, m)| (*t, *m))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000;

    fn params(viewers: u32, batches: u64, batch: usize) -> Params {
        Params {
            viewers,
            batches,
            batch,
            skus: vec!["A1".into(), "A2".into(), "A3".into()],
            late_share: 0.05,
            late_max_ms: 180_000,
            seed: 7,
        }
    }

    /// The server's session folding (src/audience/viewers.rs), applied in arrival order.
    #[derive(Default, Clone, Copy)]
    struct ServerViewer {
        entered: i64,
        left: i64,
        left_early: bool,
    }

    impl ServerViewer {
        fn in_session(&self) -> bool {
            self.entered > self.left
        }

        /// Returns the watch time a leave (or a late enter) closed.
        fn apply(&mut self, enter: bool, at: i64) -> i64 {
            if enter {
                if self.in_session() {
                    self.entered = self.entered.min(at);
                } else if self.left_early && at <= self.left {
                    self.left_early = false;
                    self.entered = at.min(self.left);
                    return self.left - at;
                } else if at > self.left {
                    self.entered = at;
                }
            } else if self.in_session() {
                if at >= self.entered {
                    self.left = at;
                    return at - self.entered;
                }
            } else if at > self.left {
                self.left = at;
                self.left_early = true;
            }
            0
        }
    }

    /// Generates a run whose batches are answered (and applied) up to `window` out of order.
    fn run(p: Params, window: usize) -> (Vec<Vec<Ev>>, Model, Vec<Vec<Ev>>) {
        let mut g = Generator::new(p.clone());
        let mut rng = Rng::new(99, 1);
        let mut made = Vec::new();
        let mut in_flight: Vec<(u64, Vec<Ev>)> = Vec::new();
        let mut applied = Vec::new();
        let mut answered = std::collections::BTreeSet::new();
        let mut through = 0u64;
        let mut model = Model::new(p.viewers, p.skus.clone(), NOW - 3_600_000);
        let mut k = 0u64;
        let mut now = NOW;
        loop {
            let next = g.next_batch(now, through);
            now += 3;
            if let Some(evs) = &next {
                made.push(evs.clone());
                in_flight.push((k, evs.clone()));
                k += 1;
            }
            // Answer one batch of those in flight, any of them, once the window is full.
            while in_flight.len() >= window || (next.is_none() && !in_flight.is_empty()) {
                let i = below(&mut rng, in_flight.len() as u64) as usize;
                let (bk, evs) = in_flight.swap_remove(i);
                model.fold(&evs);
                applied.push(evs);
                answered.insert(bk);
                while answered.remove(&through) {
                    through += 1;
                }
            }
            if next.is_none() {
                break;
            }
        }
        (made, model, applied)
    }

    #[test]
    fn every_event_key_is_distinct_and_batches_stay_within_the_limit() {
        let p = params(2_000, 300, 500);
        let (made, model, _) = run(p, 6);
        let mut keys = HashSet::new();
        let mut n = 0;
        for b in &made {
            assert!(b.len() <= 500);
            for e in b {
                assert!(keys.insert((e.user, e.kind, e.ts_ms)), "{e:?} twice");
                n += 1;
            }
        }
        assert!(n > 100_000, "{n} events");
        assert_eq!(model.overflow(), 0);
        let kinds: HashSet<Kind> = made.iter().flatten().map(|e| e.kind).collect();
        assert_eq!(kinds.len(), 7, "every type appears: {kinds:?}");
    }

    #[test]
    fn the_model_matches_the_servers_folding_in_any_arrival_order() {
        let p = params(3_000, 400, 300);
        let (_, model, applied) = run(p.clone(), 8);
        let mut server = vec![ServerViewer::default(); p.viewers as usize];
        let mut watched = 0i64;
        for e in applied.iter().flatten() {
            if matches!(e.kind, Kind::Enter | Kind::Leave) {
                watched += server[e.user as usize].apply(e.kind == Kind::Enter, e.ts_ms);
            }
        }
        let now = NOW + 10_000_000;
        let online: Vec<&ServerViewer> = server.iter().filter(|v| v.in_session()).collect();
        watched += online.iter().map(|v| now - v.entered).sum::<i64>();
        let x = model.expected(now);
        assert_eq!(x.online, online.len() as u64);
        assert_eq!(x.watched_ms, watched as u64);
        assert!(x.online > 0 && x.online < x.entered, "{x:?}");
        // Some viewers came back, some sent their leave before their enter.
        let (mut returned, mut early) = (0, 0);
        let mut by_user: HashMap<u32, Vec<(usize, Ev)>> = HashMap::new();
        for (i, e) in applied.iter().flatten().enumerate() {
            if matches!(e.kind, Kind::Enter | Kind::Leave) {
                by_user.entry(e.user).or_default().push((i, *e));
            }
        }
        for evs in by_user.values() {
            if evs.iter().filter(|(_, e)| e.kind == Kind::Enter).count() == 2 {
                returned += 1;
            }
            if evs.first().is_some_and(|(_, e)| e.kind == Kind::Leave) {
                early += 1;
            }
        }
        assert!(
            returned > 10 && early > 10,
            "returned {returned}, early {early}"
        );
    }

    #[test]
    fn figures_count_each_viewer_once() {
        let mut m = Model::new(3, vec!["A1".into()], NOW - 1000);
        let e = |user, kind, ts_ms, extra| Ev {
            ts_ms,
            user,
            kind,
            extra,
        };
        m.fold(&[
            e(0, Kind::Enter, NOW, 4),
            e(0, Kind::Like, NOW + 2, 5),
            e(0, Kind::Click, NOW + 4, 0),
            e(0, Kind::Click, NOW + 6, 0),
            e(1, Kind::Leave, NOW + 60_000, 0),
        ]);
        m.fold(&[
            e(1, Kind::Enter, NOW + 30_000, 1),
            e(0, Kind::Leave, NOW + 10_000, 0),
            e(0, Kind::Enter, NOW + 20_000, 0),
            e(2, Kind::Comment, NOW - 61_000, 0),
        ]);
        let x = m.expected(NOW + 50_000);
        assert_eq!((x.unique, x.entered, x.clicked), (3, 2, 1));
        assert_eq!((x.likes, x.comments, x.online), (5, 1, 1));
        // v0: 10 s, then open from 20 s to 50 s; v1: 30 s.
        assert_eq!(x.watched_ms, 70_000);
        assert_eq!(x.avg_watch_s(), 35.0);
        assert_eq!(
            x.sources,
            BTreeMap::from([("recommend".into(), 1), ("search".into(), 1)])
        );
        assert_eq!(x.clicks, BTreeMap::from([("A1".into(), 2)]));
        assert_eq!(x.per_minute.len(), 2);
    }

    #[test]
    fn batches_are_the_json_the_endpoint_takes() {
        let p = params(500, 50, 200);
        let mut g = Generator::new(p.clone());
        let mut body = Vec::new();
        for _ in 0..20 {
            let evs = g.next_batch(NOW, 0).unwrap();
            body.clear();
            g.write_json(&evs, &mut body);
            let v: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
            assert_eq!(v.len(), evs.len());
            for (j, e) in v.iter().zip(&evs) {
                assert_eq!(j["type"], e.kind.name());
                assert_eq!(j["user"], user_id(e.user));
                assert_eq!(j["ts_ms"], e.ts_ms);
                assert!(crate::ids::valid(j["user"].as_str().unwrap()));
                match e.kind {
                    Kind::Click => assert_eq!(j["sku"], p.skus[e.extra as usize]),
                    Kind::Like if e.extra > 1 => assert_eq!(j["count"], e.extra),
                    Kind::Enter if e.extra > 0 => {
                        assert_eq!(j["source"], SOURCES[e.extra as usize - 1])
                    }
                    _ => assert_eq!(j.as_object().unwrap().len(), 3, "{j}"),
                }
            }
        }
    }

    #[test]
    fn a_bad_batch_has_one_bad_event_at_its_index() {
        for n in 0..5 {
            let b = bad_batch(n, NOW);
            let v: Vec<serde_json::Value> = serde_json::from_slice(&b.body).unwrap();
            assert_eq!(v.len(), BAD_LEN);
            let bad = &v[b.index];
            let good = |e: &serde_json::Value| {
                matches!(e["type"].as_str(), Some("enter" | "like"))
                    && e["ts_ms"] == NOW
                    && e.get("sku").is_none()
                    && e.get("count").is_none_or(|c| c == 7)
            };
            assert!(!good(bad), "{bad}");
            assert!(v.iter().enumerate().all(|(i, e)| i == b.index || good(e)));
        }
    }
}
