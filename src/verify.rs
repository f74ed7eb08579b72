//! `livehub verify --data-dir DIR`: checks a stopped hub's data dir offline, before and after
//! a disk is moved. It changes nothing on disk. It checks the checksum of every journal
//! snapshot and of every batch and record of every segment, replays the journal into a
//! scratch state, and reports per room the orders, the GMV and, for an embedded hub, whether
//! each SKU's counters agree with its orders. Damage names the file and offset.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use crate::data_dir::{HubMode, MODE_FILE};
use crate::journal::recovery::{replay_with, Check};
use crate::journal::{segment, snapshot};
use crate::rooms::Rooms;

/// What `verify` found.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The data dir checked.
    pub data_dir: PathBuf,
    /// `embedded` or `fleet`, from the data dir's marker (`embedded` when it has none).
    pub mode: &'static str,
    /// Whether everything checked out: no damage, and every SKU consistent.
    pub ok: bool,
    /// Damage found: file, offset and what. A hub would refuse to start on it (or, for a
    /// journal snapshot, fall back to an older one or to a full replay).
    pub damage: Vec<Damage>,
    /// A torn last batch, which a start would cut off (it was never acknowledged).
    pub torn_last_batch: Option<Damage>,
    /// Journal snapshots checked, and segments read.
    pub snapshots: usize,
    /// Segments read.
    pub segments: usize,
    /// Records replayed after the newest usable journal snapshot.
    pub records_replayed: u64,
    /// Per room, by id.
    pub rooms: BTreeMap<String, RoomReport>,
}

/// A place in a file that does not check out.
#[derive(Debug, Serialize)]
pub struct Damage {
    /// The file.
    pub file: PathBuf,
    /// Byte offset in it.
    pub offset: u64,
    /// What is wrong.
    pub detail: String,
}

/// One room's figures, from its durable orders.
#[derive(Debug, Serialize)]
pub struct RoomReport {
    /// Durable orders.
    pub orders: u64,
    /// Sum of their amounts, in fen.
    pub gmv_fen: u128,
    /// Per SKU (embedded hubs only: a fleet hub's SKUs are in Redis).
    pub skus: BTreeMap<String, SkuReport>,
    /// Whether every SKU is consistent.
    pub consistent: bool,
}

/// One SKU's counters against its orders.
#[derive(Debug, Serialize)]
pub struct SkuReport {
    /// Initial stock + restocks − withdrawals.
    pub stock_total: u64,
    /// The SKU's durable sold counter.
    pub sold: u64,
    /// Units left.
    pub left: u64,
    /// Units summed from the room's orders of this SKU.
    pub units_in_orders: u64,
    /// `sold == units_in_orders` and `sold + left == stock_total`.
    pub consistent: bool,
}

/// Checks `data_dir`. `Err` only when it cannot be read at all; damage is in the report.
pub fn verify(data_dir: &Path) -> Result<Report, String> {
    let journal_dir = segment::journal_dir(data_dir);
    if !journal_dir.is_dir() {
        return Err(format!("{} has no journal", data_dir.display()));
    }
    let mode = match std::fs::read_to_string(data_dir.join(MODE_FILE)) {
        Ok(s) if s.trim() == "fleet" => HubMode::Fleet,
        _ => HubMode::Embedded,
    };
    let io = |e: std::io::Error| format!("{}: {e}", journal_dir.display());
    let snapshots = snapshot::list(&journal_dir).map_err(io)?;
    let segments = segment::list(&journal_dir).map_err(io)?;
    let mut report = Report {
        data_dir: data_dir.to_path_buf(),
        mode: match mode {
            HubMode::Embedded => "embedded",
            HubMode::Fleet => "fleet",
        },
        ok: true,
        damage: Vec::new(),
        torn_last_batch: None,
        snapshots: snapshots.len(),
        segments: segments.len(),
        records_replayed: 0,
        rooms: BTreeMap::new(),
    };
    for (number, path) in &snapshots {
        if let Err(detail) = snapshot::load(path, *number) {
            report.damage.push(Damage {
                file: path.clone(),
                offset: 0,
                detail: format!("journal snapshot: {detail}"),
            });
        }
    }
    let rooms = match mode {
        HubMode::Embedded => Rooms::default(),
        HubMode::Fleet => {
            let hub = std::fs::read_to_string(data_dir.join(crate::fleet::HUB_ID_FILE))
                .unwrap_or_default();
            // Replay never publishes; the receiver is not needed.
            let (tx, _) = tokio::sync::mpsc::unbounded_channel();
            Rooms::in_fleet(Arc::from(hub.trim()), tx)
        }
    };
    match replay_with(&journal_dir, &rooms, Check::ReadOnly) {
        Ok(replayed) => {
            report.records_replayed = replayed.records;
            report.torn_last_batch = replayed.cut.map(|(file, offset, bytes)| Damage {
                file,
                offset,
                detail: format!(
                    "a torn last batch of {bytes} bytes: never acknowledged; a start cuts it off"
                ),
            });
        }
        Err(crate::journal::JournalError::Corrupt {
            path,
            offset,
            detail,
        }) => report.damage.push(Damage {
            file: path,
            offset,
            detail,
        }),
        Err(e) => report.damage.push(Damage {
            file: journal_dir.clone(),
            offset: 0,
            detail: e.to_string(),
        }),
    }
    if report.damage.is_empty() {
        for room in rooms.all() {
            let mut r = RoomReport {
                orders: 0,
                gmv_fen: 0,
                skus: BTreeMap::new(),
                consistent: true,
            };
            let mut units: BTreeMap<Arc<str>, u64> = BTreeMap::new();
            room.orders.for_each_from(0, |o| {
                r.orders += 1;
                r.gmv_fen += u128::from(o.amount_fen);
                *units.entry(o.sku.clone()).or_default() += o.qty;
            });
            if mode == HubMode::Embedded {
                for sku in room.skus.list() {
                    let (total, sold, left) = (sku.stock_total(), sku.sold(), sku.left());
                    let in_orders = units.get(&sku.id).copied().unwrap_or(0);
                    let consistent = sold == in_orders && sold.checked_add(left) == Some(total);
                    r.consistent &= consistent;
                    r.skus.insert(
                        sku.id.to_string(),
                        SkuReport {
                            stock_total: total,
                            sold,
                            left,
                            units_in_orders: in_orders,
                            consistent,
                        },
                    );
                }
            }
            report.ok &= r.consistent;
            report.rooms.insert(room.id.to_string(), r);
        }
    }
    report.ok &= report.damage.is_empty();
    Ok(report)
}
