//! A server's CPU time (user + system) from `/proc`, read before and after a measured window
//! to give the server's CPU per ack.

/// Where a server's CPU time is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// A process of its own (livehub by `--server-pid`, a peer started as a child).
    Process(u32),
    /// Threads of this process with this name (the echo server run in-process).
    Threads(&'static str),
}

impl Probe {
    /// CPU seconds used so far; `None` when `/proc` cannot tell (the process is gone).
    pub fn seconds(self) -> Option<f64> {
        let ticks = match self {
            Probe::Process(pid) => {
                stat_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?
            }
            Probe::Threads(name) => {
                let mut sum = 0;
                for t in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
                    let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else {
                        continue;
                    };
                    if comm(&stat) == Some(name) {
                        sum += stat_ticks(&stat).unwrap_or(0);
                    }
                }
                sum
            }
        };
        Some(ticks as f64 / clock_ticks())
    }
}

/// Ticks a second of the times in `/proc/*/stat`.
fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// The command name in a stat line: between the first `(` and the last `)`.
fn comm(stat: &str) -> Option<&str> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    stat.get(open + 1..close)
}

/// utime + stime (fields 14 and 15) of a stat line, in ticks. The command name before them
/// may hold spaces and parentheses, so the fields are counted from its closing `)`.
fn stat_ticks(stat: &str) -> Option<u64> {
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let mut f = rest.split_whitespace().skip(11);
    let utime: u64 = f.next()?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Server CPU per ack in µs over a window, from the CPU seconds at its start and end.
pub fn us_per_ack(before: Option<f64>, after: Option<f64>, acks: u64) -> Option<f64> {
    match (before, after) {
        (Some(b), Some(a)) if acks > 0 && a >= b => {
            Some(((a - b) * 1e6 / acks as f64 * 100.0).round() / 100.0)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_utime_and_stime_past_an_odd_command_name() {
        let line = "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 1234 567 0 0 20 0 3 0 1 2 3";
        assert_eq!(comm(line), Some("a) b (c)"));
        assert_eq!(stat_ticks(line), Some(1234 + 567));
    }

    #[test]
    fn reads_this_process_and_divides_by_acks() {
        assert!(Probe::Process(std::process::id()).seconds().is_some());
        assert_eq!(Probe::Process(u32::MAX).seconds(), None);
        assert_eq!(us_per_ack(Some(1.0), Some(2.0), 1_000_000), Some(1.0));
        assert_eq!(us_per_ack(Some(1.0), Some(2.0), 0), None);
    }
}
