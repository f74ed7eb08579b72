//! Payment notices: how a payment provider's adapter tells the hub that a buyer has paid an
//! order (`POST /api/payments`, docs/protocol.md and the v2 contract, "Orders that must be
//! paid").
//!
//! A notice is server-to-server and signed, not sent with a bearer token: the adapter signs
//! `"<timestamp>.<raw body>"` with HMAC-SHA256 and the hub's payment secret (`--payment-secret`,
//! else generated into `DATA_DIR/payment.secret`), and sends the timestamp and the signature in
//! two headers. A signature over the timestamp and a bound on its age make a captured notice
//! useless after [`MAX_SKEW_MS`]; within that window a replay is harmless, because a notice is
//! idempotent on its `payment_id`.
//!
//! - [`notice`]: the two checks a notice goes through, signature first ([`verify`]), then body
//!   ([`parse`]), their errors, and [`sign`] for senders (tests, the demo, the load tool).
//!
//! This module only reads and checks notices; what a notice does to an order is the order
//! status core's business.

pub mod notice;

pub use notice::{
    parse, sign, verify, NoticeError, PaymentNotice, MAX_PAYMENT_ID_LEN, MAX_SKEW_MS,
    SIGNATURE_HEADER, TIMESTAMP_HEADER,
};
