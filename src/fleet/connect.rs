//! Joining the fleet at start-up: what `server::run` calls instead of [`Hub::open`] when
//! `--redis` is given.

use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::{Fleet, FleetOptions};
use crate::hub::{GateKind, Hub, HubOptions};
use crate::journal::Replayed;
use crate::rooms::Rooms;

/// Opens the hub in fleet mode: connects, copies rooms and SKUs from Redis, replays the
/// journal, publishes what the stream lacks and releases this hub's orphan tickets, then starts
/// the publisher and the copy's refresh. Fails with a clear error when Redis does not answer.
pub async fn open(
    options: &HubOptions,
    fleet_options: &FleetOptions,
    token: &CancellationToken,
) -> anyhow::Result<(Hub, Replayed)> {
    // Journal snapshots hold rooms, SKUs and orders of the embedded mode; in fleet mode Redis
    // holds rooms and SKUs and the journal only orders, so the journal is replayed in full and
    // no journal snapshot is taken. A data dir whose segments an embedded run compacted cannot
    // switch.
    let journal_dir = options.journal.data_dir.join("journal");
    if journal_dir.exists()
        && !crate::journal::snapshot::list(&journal_dir)
            .context("cannot list the journal")?
            .is_empty()
    {
        anyhow::bail!(
            "{} holds snapshots of a hub run without --redis; use a fresh data dir for --redis",
            journal_dir.display()
        );
    }
    let mut options = options.clone();
    options.journal.snapshot_every_records = 0;
    let fleet = Fleet::connect(fleet_options)
        .await
        .with_context(|| format!("cannot reach redis at {}", fleet_options.url))?;
    fleet.register().await?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let rooms = Arc::new(Rooms::in_fleet(fleet_options.hub_id.clone(), tx));
    let loaded = super::mirror::load_all(&fleet, &rooms)
        .await
        .context("cannot read rooms from redis")?;
    let opened = {
        let token = token.clone();
        let gate = GateKind::Fleet(Box::new(fleet.clone()));
        tokio::task::spawn_blocking(move || Hub::open_with(options, rooms, gate, token)).await??
    };
    let repaired = super::reconcile::startup(&opened.0, &fleet)
        .await
        .context("start-up repair against redis failed")?;
    tracing::info!(
        hub = %fleet_options.hub_id,
        rooms = loaded.len(),
        published = repaired.published,
        released = repaired.released,
        committed = repaired.committed,
        aborted = repaired.aborted,
        deadlines = repaired.deadlines,
        "joined the fleet"
    );
    let hub = opened.0.clone();
    hub.tasks()
        .spawn(super::publish::run(fleet.clone(), rx, token.clone()));
    hub.tasks()
        .spawn(super::stream::run(fleet.clone(), token.clone()));
    hub.tasks()
        .spawn(super::live::run(hub.clone(), fleet.clone(), token.clone()));
    hub.tasks()
        .spawn(super::mirror::run(hub.clone(), fleet, token.clone()));
    Ok(opened)
}
