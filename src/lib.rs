//! livehub: a real-time hub for live-commerce flash sales and the host's sales dashboard.
//!
//! The way of a buy: socket ([`buyer::connection`]) → protocol ([`protocol`]) → idempotency
//! and admission ([`hub::buy`]) → gate ([`inventory`]) → journal ([`journal`], the durable
//! point) → ack ([`hub::buy::placed_ack`], written by the buyer's task).
//! The way of the figures: orders ([`rooms`]) → aggregator ([`dashboard::aggregator`]) →
//! dashboards ([`dashboard::feed`]).
//!
//! - [`config`]: flags and `LIVEHUB_*` environment variables, with named defaults
//! - [`data_dir`]: the data dir's own files: generated secrets, the mode that wrote it
//! - [`server`]: the router and `run(listener, settings, shutdown)` that tests call directly;
//!   the accept loop and its connection limits
//! - [`api`]: HTTP: REST handlers, the extractors that check tokens, ids and bodies, the
//!   socket upgrades, one JSON error type
//! - [`protocol`]: serde types of every buyer frame, SKU states and rejection codes
//! - [`ids`]: the id grammar every edge checks
//! - [`json_body`]: JSON request bodies, one object, errors that name the field
//! - [`auth`]: admin/viewer bearer tokens and buyers' HS256 JWTs
//! - [`payments`]: payment notices: their HMAC signature and their body
//! - [`buyer`]: one task per buyer socket, and the sale and stock pushes to buyers
//! - [`hub`]: the state every connection shares, the buy path, and after it: payments,
//!   cancels, refunds and the expiry of unpaid orders
//! - [`inventory`]: the gate: CAS stock, per-user limits, sale windows
//! - [`journal`]: the record of truth: records, group commit, recovery, journal snapshots
//! - [`rooms`]: the registry of rooms, a room's parts, and how journal records change them
//! - [`catalog`]: operator changes (rooms, SKUs, stock, sale windows), journaled first
//! - [`dashboard`]: per-room aggregator, snapshots, fan-out slots, the feed, its socket loop
//! - [`overview`]: every room at a glance: the figures, built and encoded once a second for
//!   every watcher, and the `/ws/overview` socket
//! - [`review`]: a room's review (复盘) from its durable state: per-minute series, SKUs,
//!   funnel, sharers, refusals, payment outcomes; cached while the room does not change
//! - [`seating`]: least-loaded seating in fan-out slots (buyers' pushes, dashboards)
//! - [`fleet`]: fleet mode (`--redis`): several hubs sharing rooms, stock and limits
//!   through one Redis or a Redis Cluster, orders published to a stream per room and read
//!   back by one blocking reader per hub, live counts summed across hubs, start-up repair and
//!   `livehub reconcile`
//! - [`audience`]: audience events: a batch's parser and checks, a room's viewers, sessions,
//!   sources and funnel
//! - [`background`]: threads under the idle policy for bulk work that must not hold up buys
//! - [`demo`]: the `--demo` livestream simulation, a second room, and a finished earlier stream
//! - [`telemetry`]: Prometheus metrics and tracing
//! - [`verify`]: `livehub verify`, the offline check of a stopped hub's data dir
//! - [`clock`]: Unix milliseconds

pub mod api;
pub mod audience;
pub mod auth;
pub mod background;
pub mod buyer;
pub mod catalog;
pub mod clock;
pub mod config;
pub mod dashboard;
pub mod data_dir;
pub mod demo;
pub mod fleet;
pub mod hub;
pub mod ids;
pub mod inventory;
pub mod journal;
pub mod json_body;
pub mod overview;
pub mod payments;
pub mod protocol;
pub mod review;
pub mod rooms;
pub mod seating;
pub mod server;
pub mod telemetry;
pub mod verify;
