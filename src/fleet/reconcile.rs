//! Redis against the journals.
//!
//! A hub that crashed between the buy script and its journal write leaves a ticket in Redis:
//! the unit is taken but no order exists, so it stays unsold (never oversold) until the ticket
//! is released. Two repairs:
//! - [`startup`]: when a hub starts, before it serves, it publishes what its journal holds and
//!   the stream lacks, then releases every ticket of its own that its journal does not hold
//!   as an order. Exact, because only this hub makes tickets with its id and it has no buy in
//!   flight yet.
//! - [`reconcile`] (`livehub reconcile`): a report over every room and SKU (stock, sold,
//!   open tickets per hub, units unaccounted for), checked against the journals of the data
//!   dirs given; with `repair`, does the start-up repair for those (stopped) hubs.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::buy::TicketAt;
use super::scripts::{Seen, Ticket};
use super::{keys, mirror, publish, Fleet, FleetError, FleetOptions};
use crate::hub::Hub;
use crate::ids::KEY_SEPARATOR;
use crate::journal::{Apply, Mode, OrderRecord, Record};
use crate::rooms::room::Room;

/// What the start-up step did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Repaired {
    /// Journaled orders published to the stream now.
    pub published: u64,
    /// Tickets of this hub without an order in its journal, released.
    pub released: u64,
    /// Claims of this hub whose moves its journal holds, committed now.
    pub committed: u64,
    /// Claims of this hub whose moves its journal does not hold, given back.
    pub aborted: u64,
    /// This hub's unpaid orders whose deadlines were loaded from Redis.
    pub deadlines: u64,
}

/// The open tickets of `hub` in `room`, with their request fields.
async fn tickets_of(
    fleet: &Fleet,
    room: &str,
    hub: &str,
) -> Result<Vec<(String, Option<Seen>)>, FleetError> {
    let fields: Vec<String> = fleet
        .run(redis::cmd("SMEMBERS").arg(keys::pending(room, hub)))
        .await?;
    let mut out = Vec::with_capacity(fields.len());
    for f in fields {
        let s = fleet.request_state(room, &f).await?;
        out.push((f, s));
    }
    Ok(out)
}

fn split_field(field: &str) -> (&str, &str) {
    field.split_once(KEY_SEPARATOR).unwrap_or((field, ""))
}

/// Releases `hub`'s tickets in `room` whose request made no order in `has_order`.
async fn release_orphans(
    fleet: &Fleet,
    room: &str,
    hub: &str,
    has_order: impl Fn(&str, &str) -> bool,
) -> Result<u64, FleetError> {
    let mut released = 0;
    for (field, seen) in tickets_of(fleet, room, hub).await? {
        let (user, req) = split_field(&field);
        let ticket = match seen {
            Some(Seen::Pending(t)) if &*t.hub == hub => t,
            // Done, gone or someone else's: only the set entry is stale.
            _ => {
                let _: () = fleet
                    .run(redis::cmd("SREM").arg(keys::pending(room, hub)).arg(&field))
                    .await?;
                continue;
            }
        };
        if has_order(user, req) {
            continue;
        }
        let at = TicketAt {
            room: Arc::from(room),
            user: Arc::from(user),
            field: field.clone(),
            ticket,
        };
        if fleet.release(&at).await? {
            released += 1;
            tracing::info!(%room, %user, %req, sku = %at.ticket.sku, "released a ticket whose order was never journaled");
        }
    }
    Ok(released)
}

/// The start-up step of a hub in fleet mode (journal replayed, not serving yet).
pub async fn startup(hub: &Hub, fleet: &Fleet) -> Result<Repaired, FleetError> {
    let mut r = Repaired::default();
    for room in hub.rooms().all() {
        r.published += publish::catch_up(fleet, &room).await?;
        r.released += release_orphans(fleet, &room.id, &fleet.hub_id, |user, req| {
            room.requests.order_of(user, req).is_some()
        })
        .await?;
    }
    let (committed, aborted) = super::moves::repair_claims(hub, fleet).await?;
    r.committed = committed;
    r.aborted = aborted;
    r.deadlines = super::moves::load_deadlines(hub, fleet).await? as u64;
    Ok(r)
}

/// One SKU in the report.
#[derive(Debug, Clone, Serialize)]
pub struct SkuReport {
    /// The room.
    pub room: String,
    /// The SKU.
    pub sku: String,
    /// Initial stock plus restocks minus withdrawals, as Redis holds it.
    pub stock_total: u64,
    /// Units that can still be sold, as Redis holds it.
    pub left: u64,
    /// Units of orders published to the room's stream (every hub's).
    pub sold: u64,
    /// Units held by open tickets (buys in flight, or left by a crash).
    pub tickets: u64,
    /// Units of the given journals' orders.
    pub journaled: u64,
    /// `stock_total - left - sold - tickets`: 0 when every unit is accounted for; above 0,
    /// units lost to nobody (unsold); below 0, oversold.
    pub unaccounted: i64,
}

/// One hub whose data dir was given.
#[derive(Debug, Clone, Serialize)]
pub struct HubReport {
    /// The hub's id (from its data dir).
    pub hub: String,
    /// The data dir given.
    pub data_dir: PathBuf,
    /// Orders in its journal.
    pub orders: u64,
    /// Its journaled orders not yet in the stream.
    pub unpublished: u64,
    /// Its tickets without an order in its journal (a crash between Redis and the journal).
    pub orphan_tickets: u64,
}

/// `livehub reconcile`'s answer.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Every SKU has `unaccounted == 0`, and no given hub has unpublished orders or orphans.
    pub consistent: bool,
    /// Whether the given hubs were repaired (`--repair`) before the report was made.
    pub repaired: bool,
    /// Every SKU of every room.
    pub skus: Vec<SkuReport>,
    /// Every hub whose data dir was given.
    pub hubs: Vec<HubReport>,
    /// Open tickets per hub id, of every hub that ever joined (given or not).
    pub open_tickets_by_hub: BTreeMap<String, u64>,
}

/// Collects a journal's orders without touching anything else.
#[derive(Default)]
struct Collect(Mutex<Vec<Arc<OrderRecord>>>);

impl Apply for Collect {
    fn apply(&self, record: &Record, _mode: Mode) -> Result<(), String> {
        if let Record::Order(o) = record {
            self.0.lock().expect("collect lock").push(o.clone());
        }
        Ok(())
    }
}

/// Reads a stopped hub's journal (a torn tail is cut as the hub's own start would).
fn read_journal(data_dir: &std::path::Path) -> anyhow::Result<(String, Vec<Arc<OrderRecord>>)> {
    let hub = std::fs::read_to_string(data_dir.join(super::HUB_ID_FILE))
        .map_err(|e| {
            anyhow::anyhow!(
                "{}: no hub id ({e}); was this data dir used with --redis?",
                data_dir.display()
            )
        })?
        .trim()
        .to_owned();
    let dir = crate::journal::segment::journal_dir(data_dir);
    let c = Collect::default();
    crate::journal::recovery::replay(&dir, &c)?;
    let orders = c.0.into_inner().expect("collect lock");
    Ok((hub, orders))
}

/// Compares Redis with the journals in `data_dirs` (whose hubs must be stopped when `repair`).
pub async fn reconcile(url: &str, data_dirs: &[PathBuf], repair: bool) -> anyhow::Result<Report> {
    let mut journals = Vec::new();
    for d in data_dirs {
        let (hub, orders) = read_journal(d)?;
        journals.push((d.clone(), hub, orders));
    }
    let mut reports = Vec::new();
    if repair {
        for (d, hub, orders) in &journals {
            let fleet = Fleet::connect(&FleetOptions {
                url: url.to_owned(),
                hub_id: Arc::from(hub.as_str()),
                timeout: super::DEFAULT_REDIS_TIMEOUT * 4,
            })
            .await?;
            let rooms = Arc::new(crate::rooms::Rooms::default());
            mirror::load_all(&fleet, &rooms).await?;
            let by_room = group(orders);
            for (room_id, orders) in &by_room {
                let room = rooms.get_or_create(room_id, "");
                let local = Room::new(room.id.clone(), String::new());
                for o in orders {
                    local.add_order(Arc::new(OrderRecord {
                        hub: Some(Arc::from(hub.as_str())),
                        begun: None,
                        ..(**o).clone()
                    }));
                }
                publish::catch_up(&fleet, &local).await?;
            }
            let room_ids: Vec<String> = fleet.run(redis::cmd("SMEMBERS").arg(keys::ROOMS)).await?;
            for room_id in room_ids {
                let empty = Vec::new();
                let orders = by_room.get(room_id.as_str()).unwrap_or(&empty);
                release_orphans(&fleet, &room_id, hub, |u, q| {
                    orders.iter().any(|o| &*o.user == u && &*o.req == q)
                })
                .await?;
            }
            tracing::info!(hub = %hub, data_dir = %d.display(), "repaired");
        }
    }
    let fleet = Fleet::connect(&FleetOptions {
        url: url.to_owned(),
        hub_id: Arc::from("reconcile"),
        timeout: super::DEFAULT_REDIS_TIMEOUT * 4,
    })
    .await?;
    let hubs: Vec<String> = fleet.run(redis::cmd("SMEMBERS").arg(keys::HUBS)).await?;
    let mut room_ids: Vec<String> = fleet.run(redis::cmd("SMEMBERS").arg(keys::ROOMS)).await?;
    room_ids.sort();
    let rooms = crate::rooms::Rooms::default();
    let mut open_by_hub: BTreeMap<String, u64> = BTreeMap::new();
    let mut skus = Vec::new();
    for room_id in &room_ids {
        let Some(room) = mirror::load_room(&fleet, &rooms, room_id).await? else {
            continue;
        };
        let mut tickets: HashMap<Arc<str>, u64> = HashMap::new();
        for h in &hubs {
            for (_, seen) in tickets_of(&fleet, room_id, h).await? {
                if let Some(Seen::Pending(Ticket { sku, qty, .. })) = seen {
                    *tickets.entry(sku).or_default() += qty;
                    *open_by_hub.entry(h.clone()).or_default() += 1;
                }
            }
        }
        for s in room.skus.list() {
            let journaled: u64 = journals
                .iter()
                .flat_map(|(_, _, o)| o.iter())
                .filter(|o| &*o.room == room_id.as_str() && o.sku == s.id)
                .map(|o| o.qty)
                .sum();
            let t = tickets.get(&s.id).copied().unwrap_or(0);
            skus.push(SkuReport {
                room: room_id.clone(),
                sku: s.id.to_string(),
                stock_total: s.stock_total(),
                left: s.left(),
                sold: s.sold(),
                tickets: t,
                journaled,
                unaccounted: s.stock_total() as i64 - s.left() as i64 - s.sold() as i64 - t as i64,
            });
        }
    }
    for (d, hub, orders) in &journals {
        let mut unpublished = 0;
        let mut orphans = 0;
        for (room_id, os) in group(orders) {
            let last: Option<u64> = fleet
                .run(redis::cmd("HGET").arg(keys::published(room_id)).arg(hub))
                .await?;
            unpublished += os.iter().filter(|o| o.seq > last.unwrap_or(0)).count() as u64;
        }
        for room_id in &room_ids {
            for (field, seen) in tickets_of(&fleet, room_id, hub).await? {
                let (u, q) = split_field(&field);
                let is_ours = matches!(&seen, Some(Seen::Pending(t)) if *t.hub == **hub);
                let journaled = orders
                    .iter()
                    .any(|o| &*o.room == room_id.as_str() && &*o.user == u && &*o.req == q);
                if is_ours && !journaled {
                    orphans += 1;
                }
            }
        }
        reports.push(HubReport {
            hub: hub.clone(),
            data_dir: d.clone(),
            orders: orders.len() as u64,
            unpublished,
            orphan_tickets: orphans,
        });
    }
    let consistent = skus.iter().all(|s| s.unaccounted == 0)
        && reports
            .iter()
            .all(|h| h.unpublished == 0 && h.orphan_tickets == 0);
    Ok(Report {
        consistent,
        repaired: repair,
        skus,
        hubs: reports,
        open_tickets_by_hub: open_by_hub,
    })
}

fn group(orders: &[Arc<OrderRecord>]) -> BTreeMap<&str, Vec<Arc<OrderRecord>>> {
    let mut m: BTreeMap<&str, Vec<Arc<OrderRecord>>> = BTreeMap::new();
    for o in orders {
        m.entry(&*o.room).or_default().push(o.clone());
    }
    m
}
