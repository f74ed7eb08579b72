//! The Lua scripts, loaded once per connection and run by `EVALSHA` (the client sends
//! `SCRIPT LOAD` again by itself after Redis lost its script cache), and their replies.

use std::sync::Arc;

use redis::Script;

use crate::protocol::RejectCode;

/// Every script of the fleet.
pub struct Scripts {
    /// One buy: checks and takes stock and allowance, leaves a ticket ([`TAKE`]).
    pub take: Script,
    /// Gives a ticket's units back, if the request still holds exactly that ticket.
    pub release: Script,
    /// Appends a hub's journaled orders to the room's stream, exactly once.
    pub publish: Script,
    /// Creates or updates a SKU, and sends the change notice.
    pub put_sku: Script,
    /// A restock or withdrawal, and the change notice.
    pub stock: Script,
    /// Opens or closes a sale now, and sends the change notice.
    pub window: Script,
    /// Claims one order for a status move before the deciding hub journals it.
    pub claim: Script,
    /// Claims the expiry of many orders at once.
    pub claim_expiries: Script,
    /// Makes journaled moves take effect, each only while its claim stands.
    pub commit: Script,
    /// Gives back claims whose moves were not made durable.
    pub abort: Script,
}

impl Scripts {
    /// Every script, from the sources built into the binary.
    pub fn new() -> Scripts {
        Scripts {
            take: Script::new(TAKE),
            release: Script::new(include_str!("lua/release.lua")),
            publish: Script::new(include_str!("lua/publish.lua")),
            put_sku: Script::new(include_str!("lua/put_sku.lua")),
            stock: Script::new(include_str!("lua/stock.lua")),
            window: Script::new(include_str!("lua/window.lua")),
            claim: Script::new(include_str!("lua/claim.lua")),
            claim_expiries: Script::new(include_str!("lua/claim_expiries.lua")),
            commit: Script::new(include_str!("lua/commit.lua")),
            abort: Script::new(include_str!("lua/abort.lua")),
        }
    }
}

impl Default for Scripts {
    fn default() -> Self {
        Scripts::new()
    }
}

/// The buy script's source (for `redis-benchmark` and the docs).
pub const TAKE: &str = include_str!("lua/take.lua");

/// A pending buy in Redis: stock and allowance taken for `(user, req)` by one hub, until its
/// order is journaled (then published) or given back. Its text is unique per attempt, so a
/// release only ever undoes the attempt that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    /// The hub that took the stock.
    pub hub: Arc<str>,
    /// Unique per attempt on that hub.
    pub nonce: u64,
    /// The SKU the units came from.
    pub sku: Arc<str>,
    /// Units taken.
    pub qty: u64,
}

impl Ticket {
    /// `P|hub|nonce|sku|qty`.
    pub fn encode(&self) -> String {
        format!("P|{}|{}|{}|{}", self.hub, self.nonce, self.sku, self.qty)
    }

    /// Reads [`Ticket::encode`]'s text; `None` for anything else.
    pub fn decode(s: &str) -> Option<Ticket> {
        let mut p = s.split('|');
        if p.next()? != "P" {
            return None;
        }
        let t = Ticket {
            hub: Arc::from(p.next()?),
            nonce: p.next()?.parse().ok()?,
            sku: Arc::from(p.next()?),
            qty: p.next()?.parse().ok()?,
        };
        p.next().is_none().then_some(t)
    }
}

/// The ack fields of a published order, kept in the request table so a repeat of its `req`
/// on any hub gets the same ack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Done {
    /// The order id (`hub:O<number>`).
    pub order: String,
    /// The SKU bought.
    pub sku: Arc<str>,
    /// Units bought.
    pub qty: u64,
    /// What the order costs, in fen.
    pub amount_fen: u64,
    /// Stock left right after the order's units were taken (the ack's `left`).
    pub left: u64,
}

impl Done {
    /// `D|order|sku|qty|amount_fen|left`.
    pub fn encode(&self) -> String {
        format!(
            "D|{}|{}|{}|{}|{}",
            self.order, self.sku, self.qty, self.amount_fen, self.left
        )
    }

    /// Reads [`Done::encode`]'s text; `None` for anything else.
    pub fn decode(s: &str) -> Option<Done> {
        let mut p = s.split('|');
        if p.next()? != "D" {
            return None;
        }
        let d = Done {
            order: p.next()?.to_owned(),
            sku: Arc::from(p.next()?),
            qty: p.next()?.parse().ok()?,
            amount_fen: p.next()?.parse().ok()?,
            left: p.next()?.parse().ok()?,
        };
        p.next().is_none().then_some(d)
    }
}

/// What a request's entry in the request table says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// Being decided: a hub holds this ticket for it.
    Pending(Ticket),
    /// Decided: the order's ack.
    Done(Done),
}

impl Seen {
    /// Reads an entry of the request table; `None` when it is neither a ticket nor an ack.
    pub fn decode(s: &str) -> Option<Seen> {
        Ticket::decode(s)
            .map(Seen::Pending)
            .or_else(|| Done::decode(s).map(Seen::Done))
    }
}

/// The buy script's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Taken {
    /// Stock taken; the ticket is in Redis.
    Ok {
        /// Stock left right after the units were taken.
        left_after: u64,
        /// Unit price in force at the decision.
        price_fen: u64,
        /// The SKU's time to pay, when its orders must be paid.
        pay_timeout_s: Option<u64>,
    },
    /// The request was already decided or is being decided (on this hub or another).
    Seen(Seen),
    /// Refused; `left` when the SKU exists.
    Refused {
        /// Why, as the ack's `error` says it.
        code: RejectCode,
        /// Stock seen, when the SKU exists.
        left: Option<u64>,
    },
}

impl Taken {
    /// Reads the script's reply.
    pub fn parse(reply: &[String]) -> Result<Taken, String> {
        let num = |i: usize| -> Result<u64, String> {
            reply
                .get(i)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{reply:?}"))
        };
        let code = match reply.first().map(String::as_str) {
            Some("ok") => {
                return Ok(Taken::Ok {
                    left_after: num(1)?,
                    price_fen: num(2)?,
                    pay_timeout_s: reply.get(3).and_then(|v| v.parse().ok()),
                })
            }
            Some("seen") => {
                let s = reply.get(1).ok_or_else(|| format!("{reply:?}"))?;
                return Seen::decode(s)
                    .map(Taken::Seen)
                    .ok_or_else(|| format!("bad request state {s:?}"));
            }
            Some("unknown_sku") => {
                return Ok(Taken::Refused {
                    code: RejectCode::UnknownSku,
                    left: None,
                })
            }
            Some("closed") => RejectCode::Closed,
            Some("not_open") => RejectCode::NotOpen,
            Some("limit_exceeded") => RejectCode::LimitExceeded,
            Some("sold_out") => RejectCode::SoldOut,
            Some("insufficient_stock") => RejectCode::InsufficientStock,
            _ => return Err(format!("{reply:?}")),
        };
        Ok(Taken::Refused {
            code,
            left: Some(num(1)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_states_round_trip() {
        let t = Ticket {
            hub: "h1".into(),
            nonce: 7,
            sku: "A:1".into(),
            qty: 2,
        };
        assert_eq!(Seen::decode(&t.encode()), Some(Seen::Pending(t)));
        let d = Done {
            order: "h1:O42".into(),
            sku: "A:1".into(),
            qty: 2,
            amount_fen: 19800,
            left: 3,
        };
        assert_eq!(Seen::decode(&d.encode()), Some(Seen::Done(d)));
        assert_eq!(Seen::decode("X|1"), None);
        assert_eq!(Seen::decode("P|h1|x|A|1"), None);
        assert_eq!(Seen::decode("D|o|A|1|2|3|extra"), None);
    }

    #[test]
    fn script_replies_parse() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            Taken::parse(&s(&["ok", "5", "990", ""])),
            Ok(Taken::Ok {
                left_after: 5,
                price_fen: 990,
                pay_timeout_s: None,
            })
        );
        assert_eq!(
            Taken::parse(&s(&["ok", "5", "990", "600"])),
            Ok(Taken::Ok {
                left_after: 5,
                price_fen: 990,
                pay_timeout_s: Some(600),
            })
        );
        assert_eq!(
            Taken::parse(&s(&["sold_out", "0"])),
            Ok(Taken::Refused {
                code: RejectCode::SoldOut,
                left: Some(0)
            })
        );
        assert_eq!(
            Taken::parse(&s(&["unknown_sku"])),
            Ok(Taken::Refused {
                code: RejectCode::UnknownSku,
                left: None
            })
        );
        assert!(Taken::parse(&s(&["weird"])).is_err());
        assert!(Taken::parse(&s(&["ok", "x"])).is_err());
    }
}
