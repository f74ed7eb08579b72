//! livehub: a real-time hub for live-commerce flash sales and the host's sales dashboard.
//!
//! The way of a buy: socket in → protocol → inventory gate → journal → ack out.
//! The way of the figures: orders → aggregator → dashboards.
//!
//! - [`accept`]: the accept loop: connection limits overall and per IP, handshake timeout
//! - [`config`]: flags and `LIVEHUB_*` environment variables, with named defaults
//! - [`server`]: the router and `run(listener, settings, shutdown)` that tests call directly
//! - [`protocol`]: serde types of every buyer frame, SKU states and rejection codes
//! - [`ids`]: the id grammar every edge checks
//! - [`auth`]: admin/viewer bearer tokens and buyers' HS256 JWTs
//! - [`handshake`]: the WebSocket query strings and who an upgrade is for
//! - [`buyer`]: one task per buyer socket
//! - [`stop`]: the stop signal the buyer tasks poll on every wake-up
//! - [`hub`]: shared state, and the buy path idempotency → gate → journal → ack
//! - [`inventory`]: the gate: CAS stock, per-user limits, sale windows
//! - [`journal`]: durable order log, group commit, recovery
//! - [`room`] / [`rooms`]: per-room state, and how journal records change it
//! - [`requests`]: a room's idempotency table, `(user, req)` to pending or its order
//! - [`rooms_snapshot`]: the rooms' durable state as a journal snapshot, and its restore
//! - [`admin`]: operator changes (rooms, SKUs, stock, sale windows), journaled first
//! - [`fleet`]: `--redis`: several hubs sharing rooms, stock and limits through Redis, orders
//!   published to a stream per room, start-up repair and `livehub reconcile`
//! - [`sale_feed`]: stock and sale pushes to buyers
//! - [`buyer_pushes`]: a room's buyers in slots, each push sent in waves
//! - [`seating`]: least-loaded seating in fan-out slots (buyers' pushes, dashboards)
//! - [`dashboard`]: per-room aggregator, snapshots, fan-out slots (waves), the dashboard feed
//! - [`api`]: admin and viewer REST
//! - [`demo`]: the `--demo` livestream simulation
//! - [`telemetry`]: Prometheus metrics and tracing
//! - [`rate_limit`]: per-connection token bucket
//! - [`clock`]: Unix milliseconds

pub mod api;
pub mod auth;
pub mod buyer;
pub mod catalog;
pub mod clock;
pub mod config;
pub mod dashboard;
pub mod demo;
pub mod fleet;
pub mod hub;
pub mod ids;
pub mod inventory;
pub mod journal;
pub mod protocol;
pub mod rooms;
pub mod seating;
pub mod server;
pub mod telemetry;
