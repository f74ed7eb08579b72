//! A batch of audience events as the platform's adapter posts it
//! (`POST /api/rooms/{room}/audience`): parsed and checked whole, so that one bad event
//! refuses the batch with the event's index and field, and nothing of it is taken.

use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::journal::{AudienceEvent, AudienceKind};

/// Events one batch holds at most.
pub const MAX_EVENTS: usize = 10_000;
/// How late an event may come (Unix ms before the hub's clock).
pub const MAX_LATE_MS: i64 = 10 * 60 * 1000;
/// How far ahead of the hub's clock an event may be dated (clocks of two machines).
pub const MAX_AHEAD_MS: i64 = 5_000;
/// Likes one `like` event may carry.
pub const MAX_LIKES: u32 = 10_000;

/// Why a batch was refused: the event's index and field when one event is at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchError {
    /// The bad event's index in the array.
    pub index: Option<usize>,
    /// Its bad field.
    pub field: Option<&'static str>,
    /// What is wrong, in words.
    pub message: String,
}

impl fmt::Display for BatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.index, self.field) {
            (Some(i), Some(field)) => write!(f, "event {i}: {field}: {}", self.message),
            (Some(i), None) => write!(f, "event {i}: {}", self.message),
            _ => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for BatchError {}

fn bad(index: usize, field: &'static str, message: impl Into<String>) -> BatchError {
    BatchError {
        index: Some(index),
        field: Some(field),
        message: message.into(),
    }
}

/// One event as sent, before its checks. Unknown fields are ignored.
#[derive(Debug, Default, Deserialize)]
struct Raw<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    user: Option<std::borrow::Cow<'a, str>>,
    ts_ms: Option<i64>,
    #[serde(borrow)]
    source: Option<std::borrow::Cow<'a, str>>,
    #[serde(rename = "ref", borrow)]
    referrer: Option<std::borrow::Cow<'a, str>>,
    count: Option<u64>,
    #[serde(borrow)]
    sku: Option<std::borrow::Cow<'a, str>>,
}

/// The array, read element by element so that an element that is not an event is named by
/// its index; more than [`MAX_EVENTS`] stops the read.
struct RawBatch<'a>(Vec<Raw<'a>>);

impl<'de: 'a, 'a> Deserialize<'de> for RawBatch<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = RawBatch<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON array of audience events")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(MAX_EVENTS));
                loop {
                    if out.len() == MAX_EVENTS {
                        if seq.next_element::<IgnoredAny>()?.is_some() {
                            return Err(de::Error::custom(format!(
                                "a batch holds at most {MAX_EVENTS} events"
                            )));
                        }
                        break;
                    }
                    let i = out.len();
                    match seq.next_element::<Raw<'a>>() {
                        Ok(Some(e)) => out.push(e),
                        Ok(None) => break,
                        Err(e) => return Err(de::Error::custom(format!("event {i}: {e}"))),
                    }
                }
                Ok(RawBatch(out))
            }
            fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
                Err(de::Error::custom(
                    "the body must be a JSON array of events, not an object",
                ))
            }
        }
        d.deserialize_seq(V(std::marker::PhantomData))
    }
}

fn id(index: usize, field: &'static str, v: &str) -> Result<Box<str>, BatchError> {
    crate::ids::check_named(field, v)
        .map(|()| Box::from(v))
        .map_err(|e| {
            bad(
                index,
                field,
                e.trim_start_matches(field).trim_start().to_owned(),
            )
        })
}

/// Parses and checks a batch at `now_ms`; `known_sku` says whether a `click`'s SKU exists in
/// the room. Every event is checked before any is taken.
pub fn parse(
    body: &[u8],
    now_ms: i64,
    known_sku: impl Fn(&str) -> bool,
) -> Result<Vec<AudienceEvent>, BatchError> {
    // Whole-body UTF-8 first: serde_json skips the strings of ignored fields unchecked.
    let body = std::str::from_utf8(body).map_err(|e| BatchError {
        index: None,
        field: None,
        message: format!("the body is not UTF-8: {e}"),
    })?;
    let RawBatch(raw) = serde_json::from_str(body).map_err(|e| BatchError {
        index: None,
        field: None,
        message: format!("the body is not a JSON array of audience events: {e}"),
    })?;
    let mut events = Vec::with_capacity(raw.len());
    for (i, r) in raw.into_iter().enumerate() {
        let kind = r.kind.ok_or_else(|| bad(i, "type", "missing"))?;
        let kind = AudienceKind::parse(&kind).ok_or_else(|| {
            bad(
                i,
                "type",
                format!("{kind:?} is not one of enter, leave, like, comment, share, follow, click"),
            )
        })?;
        let user = id(i, "user", &r.user.ok_or_else(|| bad(i, "user", "missing"))?)?;
        let ts_ms = r.ts_ms.ok_or_else(|| bad(i, "ts_ms", "missing"))?;
        if ts_ms > now_ms + MAX_AHEAD_MS {
            return Err(bad(i, "ts_ms", "is in the future"));
        }
        if ts_ms < now_ms - MAX_LATE_MS {
            return Err(bad(i, "ts_ms", "is more than 10 minutes late"));
        }
        let source = match (&r.source, kind) {
            (Some(s), AudienceKind::Enter) => Some(id(i, "source", s)?),
            (Some(_), _) => return Err(bad(i, "source", "only an enter has a source")),
            (None, _) => None,
        };
        let referrer = match (&r.referrer, kind) {
            (Some(s), AudienceKind::Enter) => Some(id(i, "ref", s)?),
            (Some(_), _) => return Err(bad(i, "ref", "only an enter has a ref")),
            (None, _) => None,
        };
        let count = match (r.count, kind) {
            (None, _) => 1,
            (Some(n), AudienceKind::Like) if (1..=MAX_LIKES as u64).contains(&n) => n as u32,
            (Some(_), AudienceKind::Like) => {
                return Err(bad(i, "count", format!("must be 1 to {MAX_LIKES}")))
            }
            (Some(_), _) => return Err(bad(i, "count", "only a like has a count")),
        };
        let sku = match (&r.sku, kind) {
            (Some(s), AudienceKind::Click) => {
                let s = id(i, "sku", s)?;
                if !known_sku(&s) {
                    return Err(bad(i, "sku", format!("{s} is not a SKU of this room")));
                }
                Some(s)
            }
            (None, AudienceKind::Click) => {
                return Err(bad(i, "sku", "missing (a click names its SKU)"))
            }
            (Some(_), _) => return Err(bad(i, "sku", "only a click has a sku")),
            (None, _) => None,
        };
        events.push(AudienceEvent {
            kind,
            user,
            ts_ms,
            source,
            referrer,
            count,
            sku,
        });
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000;

    fn p(body: &str) -> Result<Vec<AudienceEvent>, BatchError> {
        parse(body.as_bytes(), NOW, |s| s == "A")
    }

    #[test]
    fn a_good_batch_is_taken_whole() {
        let body = format!(
            r#"[{{"type":"enter","user":"u1","ts_ms":{NOW},"source":"share","ref":"u9","x":1}},
               {{"type":"like","user":"u1","ts_ms":{NOW},"count":5}},
               {{"type":"click","user":"u1","ts_ms":{},"sku":"A"}},
               {{"type":"leave","user":"u1","ts_ms":{}}}]"#,
            NOW - 1,
            NOW - 599_000
        );
        let e = p(&body).unwrap();
        assert_eq!(e.len(), 4);
        assert_eq!(e[0].source.as_deref(), Some("share"));
        assert_eq!(e[0].referrer.as_deref(), Some("u9"));
        assert_eq!(e[1].count, 5);
        assert_eq!(e[2].sku.as_deref(), Some("A"));
        assert_eq!(e[3].kind, AudienceKind::Leave);
        assert_eq!(p("[]").unwrap(), vec![]);
    }

    #[test]
    fn a_bad_event_names_its_index_and_field() {
        let ok = format!(r#"{{"type":"like","user":"u1","ts_ms":{NOW}}}"#);
        let cases = [
            (
                format!(r#"{{"type":"wave","user":"u","ts_ms":{NOW}}}"#),
                "type",
            ),
            (format!(r#"{{"user":"u","ts_ms":{NOW}}}"#), "type"),
            (format!(r#"{{"type":"like","ts_ms":{NOW}}}"#), "user"),
            (
                format!(r#"{{"type":"like","user":"a b","ts_ms":{NOW}}}"#),
                "user",
            ),
            (r#"{"type":"like","user":"u"}"#.to_owned(), "ts_ms"),
            (
                format!(r#"{{"type":"like","user":"u","ts_ms":{}}}"#, NOW + 60_000),
                "ts_ms",
            ),
            (
                format!(r#"{{"type":"like","user":"u","ts_ms":{}}}"#, NOW - 601_000),
                "ts_ms",
            ),
            (
                format!(r#"{{"type":"click","user":"u","ts_ms":{NOW},"sku":"B"}}"#),
                "sku",
            ),
            (
                format!(r#"{{"type":"click","user":"u","ts_ms":{NOW}}}"#),
                "sku",
            ),
            (
                format!(r#"{{"type":"like","user":"u","ts_ms":{NOW},"count":0}}"#),
                "count",
            ),
            (
                format!(r#"{{"type":"leave","user":"u","ts_ms":{NOW},"source":"ad"}}"#),
                "source",
            ),
        ];
        for (event, field) in cases {
            let e = p(&format!("[{ok},{ok},{event}]")).unwrap_err();
            assert_eq!((e.index, e.field), (Some(2), Some(field)), "{event}: {e}");
        }
    }

    #[test]
    fn malformed_bodies_and_big_batches_are_refused() {
        for body in [
            "",
            "{",
            "{}",
            r#"{"type":"like"}"#,
            "[1]",
            r#"[{"ts_ms":"x"}]"#,
        ] {
            assert!(p(body).is_err(), "{body}");
        }
        let e = p(r#"[{"type":"like","user":"u","ts_ms":1}, 7]"#).unwrap_err();
        assert!(e.message.contains("event 1"), "{e}");
        let one = format!(r#"{{"type":"like","user":"u","ts_ms":{NOW}}}"#);
        let full = format!("[{}]", vec![one.as_str(); MAX_EVENTS].join(","));
        assert_eq!(p(&full).unwrap().len(), MAX_EVENTS);
        let over = format!("[{}]", vec![one.as_str(); MAX_EVENTS + 1].join(","));
        assert!(p(&over).unwrap_err().message.contains("at most"));
    }
}
