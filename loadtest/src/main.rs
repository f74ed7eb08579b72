//! livehub-loadtest: a separate client of livehub's public protocol (docs/protocol.md) that
//! puts load on a server (flash-sale spikes, steady buys, connection ramps, dashboard fan-out,
//! soaks, orders that must be paid, payment notices, audience events), then checks the
//! server's invariants against what it saw.
//!
//! Exit codes: 0 every check passed; 1 a check failed (printed); 2 the run could not be done
//! (bad flags, server unreachable, setup refused); 3 `--max-seconds` ran out.

mod audience;
mod audience_gen;
mod buyer;
mod checkout;
mod checkout_buyer;
mod cli;
mod cpu;
mod ctx;
mod dash;
mod dashboards;
mod echo;
mod expiry_wave;
mod hiccups;
mod ids;
mod invariants;
mod net;
mod output;
mod paid_checks;
mod pay;
mod pay_echo;
mod payments;
mod peer;
mod ramp;
mod record;
mod report;
mod rest;
mod scenario;
mod soak;
mod spike;
mod steady;

use std::time::Duration;

use clap::Parser;

use crate::cli::{Cli, Cmd};

fn main() {
    let cli = Cli::parse();
    net::raise_nofile();
    let rt = runtime(None, None).expect("tokio runtime");
    let code = rt.block_on(run(cli));
    // Sockets still open (an echo server thread, tasks cut short) must not hold the exit.
    rt.shutdown_timeout(Duration::from_millis(200));
    std::process::exit(code);
}

/// Most socket events a busy worker takes from the kernel at a time. Tokio's default (1,024)
/// lets one poll wake more tasks than a worker's queue holds (256); the rest go to the global
/// queue, where they wait behind every task the next polls wake, which in a spike (thousands of
/// sockets ready at once) stretches the tail of the answers' latencies. Fewer events a poll
/// keep the woken tasks on the worker that woke them (the A/B runs are in BENCHMARKS.md).
const BUSY_IO_EVENTS: usize = 64;

/// The runtime of the load client and of the echo servers: `threads` workers named `name`
/// (tokio's defaults when `None`).
pub(crate) fn runtime(
    threads: Option<usize>,
    name: Option<&str>,
) -> std::io::Result<tokio::runtime::Runtime> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = threads {
        b.worker_threads(n);
    }
    if let Some(name) = name {
        b.thread_name(name);
    }
    b.enable_all()
        .max_io_events_per_busy_tick(BUSY_IO_EVENTS)
        .build()
}

async fn run(cli: Cli) -> i32 {
    let common = cli.common.clone();
    if let Cmd::EchoServer(a) = &cli.cmd {
        return match tokio::net::TcpListener::bind(a.listen).await {
            Ok(l) => {
                let addr = l.local_addr().map_or(a.listen, |a| a);
                eprintln!("echo server listening on {addr} (ctrl-c to stop)");
                tokio::select! {
                    _ = echo::serve(l, echo::EchoOptions { nodelay: !a.nagle, push_every: a.push_every }) => 0,
                    _ = tokio::signal::ctrl_c() => 0,
                }
            }
            Err(e) => {
                eprintln!(
                    "error: binding {}: {}",
                    a.listen,
                    net::describe_io(&e, None)
                );
                2
            }
        };
    }
    // The scenario's nominal length, for the default --max-seconds.
    let nominal = match &cli.cmd {
        Cmd::Spike(_) => Duration::from_secs(60),
        Cmd::Steady(a) => a.duration * (1 + u32::from(a.against_echo) + u32::from(a.against_bun)),
        Cmd::Ramp(a) => {
            (Duration::from_secs_f64(a.connections as f64 / a.per_second.max(1e-3)) + a.hold)
                * (1 + u32::from(a.against_echo) + u32::from(a.against_bun))
        }
        Cmd::Dashboards(a) => a.duration,
        Cmd::Soak(a) => a.duration,
        Cmd::Checkout(a) => a.deadline,
        Cmd::Payments(_) => Duration::from_secs(60),
        Cmd::ExpiryWave(a) => Duration::from_secs(a.pay_timeout_s + 40),
        Cmd::Audience(a) => {
            // With buys, quiet windows alternate with the audience's.
            let quiet = if a.buy_rate > 0.0 {
                a.duration + a.alternate + Duration::from_secs(5)
            } else {
                Duration::ZERO
            };
            a.duration + quiet + Duration::from_secs(20)
        }
        Cmd::EchoServer(_) => Duration::ZERO,
    };
    let ttl = nominal.as_secs() + 3600;
    let ctx = match ctx::Ctx::new(common, nominal, ttl).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return 2;
        }
    };
    // Every phase watches ctx.deadline; this is the backstop.
    let hard = ctx.deadline + Duration::from_secs(30);
    let fut = async {
        match cli.cmd {
            Cmd::Spike(a) => spike::spike(ctx.clone(), a).await,
            Cmd::Steady(a) => steady::steady(ctx.clone(), a).await,
            Cmd::Ramp(a) => ramp::ramp(ctx.clone(), a).await,
            Cmd::Dashboards(a) => dashboards::dashboards(ctx.clone(), a).await,
            Cmd::Soak(a) => soak::soak(ctx.clone(), a).await,
            Cmd::Checkout(a) => checkout::checkout(ctx.clone(), a).await,
            Cmd::Payments(a) => payments::payments(ctx.clone(), a).await,
            Cmd::ExpiryWave(a) => expiry_wave::expiry_wave(ctx.clone(), a).await,
            Cmd::Audience(a) => audience::audience(ctx.clone(), a).await,
            Cmd::EchoServer(_) => unreachable!(),
        }
    };
    match tokio::time::timeout_at(hard.into(), fut).await {
        Ok(Ok(code)) => code,
        Ok(Err(e)) => {
            ctx.pb.finish_and_clear();
            eprintln!("error: {e:#}");
            2
        }
        Err(_) => {
            ctx.pb.finish_and_clear();
            eprintln!(
                "error: --max-seconds ({} s) ran out before the run finished",
                ctx.deadline.duration_since(ctx.started).as_secs()
            );
            3
        }
    }
}
