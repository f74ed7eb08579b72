//! The overview, built and encoded once for everyone: every `/ws/overview` socket and every
//! `GET /api/overview` share one [`Built`] (centrifuge's "encode a broadcast once"). It is built
//! on a one-second tick while any socket watches, and on demand when a request or a new socket
//! finds the latest one older than [`OVERVIEW_INTERVAL`]; with nobody watching or asking, it
//! costs nothing. The sockets read a `watch` channel: latest value wins, so a slow socket
//! never holds a backlog.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::{watch, Notify};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::build::{self, Overview};
use crate::clock::now_ms;
use crate::hub::Hub;

/// How often the overview is built while someone watches, and how old the latest may be when a
/// request or a new socket takes it instead of building one.
pub const OVERVIEW_INTERVAL: Duration = Duration::from_secs(1);

/// One built overview, with its encoding.
#[derive(Debug)]
pub struct Built {
    /// Counts builds, increasing: a socket never sends the same one twice.
    pub number: u64,
    /// The figures.
    pub overview: Overview,
    /// Their JSON, `"op": "overview"` first: the socket's frame and the REST answer.
    pub frame: Utf8Bytes,
    /// When it was built (monotonic).
    pub at: Instant,
}

/// The hub's overview publisher. Clones share one.
#[derive(Clone)]
pub struct Overviews {
    inner: Arc<Inner>,
}

struct Inner {
    hub: Hub,
    latest: watch::Sender<Option<Arc<Built>>>,
    /// Sockets watching now; the tick runs only while there are any.
    watchers: AtomicUsize,
    /// Wakes the tick when the first socket comes. `notify_one`: the tick is its one listener,
    /// and a permit left while it is busy is not lost.
    watched: Notify,
    /// Held while building, so that requests that find the latest stale at once build it once.
    /// A plain mutex: the build is synchronous and never awaits.
    building: Mutex<()>,
    builds: AtomicU64,
}

/// A socket's place among the watchers; leaves when dropped.
pub struct Watcher {
    inner: Arc<Inner>,
    /// The overviews as they are built; the value current at joining is marked seen.
    pub overviews: watch::Receiver<Option<Arc<Built>>>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.inner.watchers.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Overviews {
    /// A publisher of `hub`'s rooms; its tick is [`Overviews::run`].
    pub fn new(hub: Hub) -> Self {
        Overviews {
            inner: Arc::new(Inner {
                hub,
                latest: watch::channel(None).0,
                watchers: AtomicUsize::new(0),
                watched: Notify::new(),
                building: Mutex::new(()),
                builds: AtomicU64::new(0),
            }),
        }
    }

    /// The latest overview if it is younger than [`OVERVIEW_INTERVAL`], else a new one, which
    /// the watchers get too.
    pub fn current(&self) -> Arc<Built> {
        let fresh = |b: &Option<Arc<Built>>| {
            b.as_ref()
                .filter(|b| b.at.elapsed() < OVERVIEW_INTERVAL)
                .cloned()
        };
        if let Some(b) = fresh(&self.inner.latest.borrow()) {
            return b;
        }
        let _building = self.inner.building.lock().expect("overview build lock");
        if let Some(b) = fresh(&self.inner.latest.borrow()) {
            return b;
        }
        self.publish()
    }

    /// Builds the overview now and hands it to the watchers (the caller holds `building`).
    fn publish(&self) -> Arc<Built> {
        let rooms = self.inner.hub.rooms().all();
        let overview = build::build(&rooms, now_ms());
        let built = Arc::new(Built {
            number: self.inner.builds.fetch_add(1, Ordering::Relaxed) + 1,
            frame: build::encode(&overview),
            overview,
            at: Instant::now(),
        });
        self.inner.latest.send_replace(Some(built.clone()));
        built
    }

    /// Joins the watchers: the tick runs while there are any.
    pub fn watch(&self) -> Watcher {
        let overviews = self.inner.latest.subscribe();
        if self.inner.watchers.fetch_add(1, Ordering::AcqRel) == 0 {
            self.inner.watched.notify_one();
        }
        Watcher {
            inner: self.inner.clone(),
            overviews,
        }
    }

    /// Sockets watching now.
    pub fn watchers(&self) -> usize {
        self.inner.watchers.load(Ordering::Acquire)
    }

    /// The tick: builds the overview once every [`OVERVIEW_INTERVAL`] while any socket watches,
    /// and sleeps while none does, until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(OVERVIEW_INTERVAL);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            if self.watchers() == 0 {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = self.inner.watched.notified() => {}
                }
                // The new socket's first overview was just taken or built; the next a tick on.
                tick.reset();
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            if self.watchers() > 0 {
                let _building = self.inner.building.lock().expect("overview build lock");
                self.publish();
            }
        }
    }
}
