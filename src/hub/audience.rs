//! Audience events into the journal: a checked batch, less the events the room counted
//! already (a re-sent batch), is journaled in records that fit the journal's frame, all
//! encoded ahead and submitted at once so one group commit takes them; the journal's apply
//! queues them for the room's audience ([`crate::audience::Audience::apply`]). The answer
//! comes once every record is durable.

use std::sync::Arc;

use super::Hub;
use crate::audience::batch::{self, BatchError};
use crate::background;
use crate::clock::now_ms;
use crate::journal::{AudienceEvent, Record};
use crate::rooms::room::Room;

/// What a posted batch came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ingested {
    /// Events journaled and counted now.
    pub accepted: usize,
    /// Events counted before (a re-sent batch), left out.
    pub duplicates: usize,
}

/// Why a batch was not taken.
#[derive(Debug)]
pub enum IngestError {
    /// A bad batch: nothing of it was taken.
    Bad(BatchError),
    /// The journal refused; the events of records already durable are counted, and sending
    /// the batch again counts the rest once.
    Unavailable(String),
}

/// Bodies up to this many bytes are parsed on the runtime's worker; larger ones on the
/// background pool.
const INLINE_PARSE_BYTES: usize = 64 * 1024;

/// Bytes of events one journal record holds at most, well within a record's payload.
const RECORD_BUDGET: usize = crate::journal::record::MAX_PAYLOAD * 7 / 8;

/// An event's journal bytes at most: the fixed fields, and the ids' lengths.
fn encoded_at_most(e: &AudienceEvent) -> usize {
    let len = |s: &Option<Box<str>>| s.as_ref().map_or(1, |s| s.len() + 2);
    24 + e.user.len() + len(&e.source) + len(&e.referrer) + len(&e.sku)
}

/// Splits events into records that fit a journal frame.
fn records(room: &Arc<str>, events: Vec<AudienceEvent>, ts_ms: i64) -> Vec<Record> {
    let mut out = Vec::new();
    let mut chunk = Vec::new();
    let mut bytes = 0;
    for e in events {
        let n = encoded_at_most(&e);
        if bytes + n > RECORD_BUDGET && !chunk.is_empty() {
            out.push(std::mem::take(&mut chunk));
            bytes = 0;
        }
        bytes += n;
        chunk.push(e);
    }
    if !chunk.is_empty() {
        out.push(chunk);
    }
    out.into_iter()
        .map(|events| Record::Audience {
            room: room.clone(),
            events: events.into(),
            ts_ms,
            frame: Default::default(),
        })
        .collect()
}

/// A checked batch made ready for the journal: its unseen events in records, each encoded.
struct Prepared {
    records: Vec<Record>,
    done: Ingested,
}

/// The re-sent check, the split into records and their encoding: the work of a batch before
/// the journal, done by whoever parsed it.
fn prepare(room: &Room, events: Vec<AudienceEvent>, now_ms: i64) -> Prepared {
    let total = events.len();
    let fresh = room.audience.unseen(events);
    let done = Ingested {
        accepted: fresh.len(),
        duplicates: total - fresh.len(),
    };
    let records = if fresh.is_empty() {
        Vec::new()
    } else {
        records(&room.id, fresh, now_ms)
    };
    for r in &records {
        r.encode_ahead();
    }
    Prepared { records, done }
}

impl Hub {
    /// Checks, journals and counts a batch of audience events for `room`. The re-sent check,
    /// the split into records and their encoding, and then the fold run on the background
    /// pool ([`crate::background`]), and so does the parse of a large batch: milliseconds of
    /// work that buys on the runtime's workers and the journal writer should not wait
    /// behind, on state no buy waits for.
    pub async fn ingest_audience(
        &self,
        room: &Arc<Room>,
        body: axum::body::Bytes,
    ) -> Result<Ingested, IngestError> {
        let now = now_ms();
        if body.len() <= INLINE_PARSE_BYTES {
            let events = batch::parse(&body, now, |s| room.skus.get(s).is_some())
                .map_err(IngestError::Bad)?;
            return self.ingest_events(room, events, now).await;
        }
        let prepared = {
            let room = room.clone();
            background::run(move || {
                let events = batch::parse(&body, now, |s| room.skus.get(s).is_some())?;
                Ok(prepare(&room, events, now))
            })
            .await
            .map_err(IngestError::Bad)?
        };
        self.journal_and_fold(room, prepared).await
    }

    /// Journals and counts checked events (the demo's audience comes this way too).
    pub async fn ingest_events(
        &self,
        room: &Arc<Room>,
        events: Vec<AudienceEvent>,
        now_ms: i64,
    ) -> Result<Ingested, IngestError> {
        let prepared = {
            let room = room.clone();
            background::run(move || prepare(&room, events, now_ms)).await
        };
        self.journal_and_fold(room, prepared).await
    }

    /// Journals a prepared batch; the apply queues it for the room's next reader, and it is
    /// folded here instead, on the pool, so that reader (the aggregator's tick) need not.
    async fn journal_and_fold(
        &self,
        room: &Arc<Room>,
        prepared: Prepared,
    ) -> Result<Ingested, IngestError> {
        let done = self.journal_prepared(prepared).await?;
        let r = room.clone();
        background::run(move || r.audience.fold()).await;
        Ok(done)
    }

    /// Submits a prepared batch's records at once, so one group commit takes them, and
    /// answers once every one is durable.
    async fn journal_prepared(&self, prepared: Prepared) -> Result<Ingested, IngestError> {
        let mut waiting = Vec::with_capacity(prepared.records.len());
        for r in prepared.records {
            waiting.push(
                self.journal()
                    .submit(r)
                    .map_err(|e| IngestError::Unavailable(e.to_string()))?,
            );
        }
        for rx in waiting {
            match rx.await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(IngestError::Unavailable(e.to_string())),
                Err(_) => return Err(IngestError::Unavailable("the journal stopped".into())),
            }
        }
        metrics::counter!("livehub_audience_events_total").increment(prepared.done.accepted as u64);
        Ok(prepared.done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_big_batch_splits_into_records_that_fit_a_frame() {
        let events: Vec<AudienceEvent> = (0..10_000)
            .map(|i| AudienceEvent {
                kind: crate::journal::AudienceKind::Enter,
                user: format!("{i:0>64}").into(),
                ts_ms: 1_700_000_000_000 + i,
                source: Some("x".repeat(64).into()),
                referrer: Some("y".repeat(64).into()),
                count: 1,
                sku: None,
            })
            .collect();
        let rs = records(&Arc::from("r"), events, 1);
        assert!(rs.len() > 1);
        let mut n = 0;
        for r in &rs {
            let mut buf = Vec::new();
            r.encode_into(&mut buf);
            assert!(
                buf.len() - 8 <= crate::journal::record::MAX_PAYLOAD,
                "{}",
                buf.len()
            );
            let Record::Audience { events, .. } = r else {
                unreachable!()
            };
            n += events.len();
        }
        assert_eq!(n, 10_000);
    }
}
