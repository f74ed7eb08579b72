//! The review's per-minute series as CSV (`?format=csv`): a header line, then one line per
//! minute in the JSON's order, integers only, so no field ever needs quoting.

use std::fmt::Write;

use super::MinuteRow;

/// The header line, without its newline.
pub const HEADER: &str = "t_ms,gmv_fen,paid_gmv_fen,orders,online,clicks";

/// The series as CSV, each line ending in `\n`.
pub fn minutes(rows: &[MinuteRow]) -> String {
    let mut out = String::with_capacity(HEADER.len() + 1 + rows.len() * 40);
    out.push_str(HEADER);
    out.push('\n');
    for r in rows {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{}",
            r.t_ms, r.gmv_fen, r.paid_gmv_fen, r.orders, r.online, r.clicks
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_per_minute_under_the_header() {
        let rows = [
            MinuteRow {
                t_ms: 60_000,
                gmv_fen: 300,
                paid_gmv_fen: 100,
                orders: 2,
                online: 5,
                clicks: 1,
            },
            MinuteRow {
                t_ms: 120_000,
                gmv_fen: 0,
                paid_gmv_fen: 0,
                orders: 0,
                online: 0,
                clicks: 0,
            },
        ];
        assert_eq!(
            minutes(&rows),
            "t_ms,gmv_fen,paid_gmv_fen,orders,online,clicks\n60000,300,100,2,5,1\n120000,0,0,0,0,0\n"
        );
        assert_eq!(minutes(&[]), format!("{HEADER}\n"));
    }
}
