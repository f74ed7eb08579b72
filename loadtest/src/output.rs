//! The summary: one JSON object (`--json`) or a table rendered from the same object.

use serde_json::{Map, Value};

/// Prints the summary on stdout.
pub fn print(summary: &Value, as_json: bool) {
    if as_json {
        println!(
            "{}",
            serde_json::to_string(summary).expect("summary serializes")
        );
    } else {
        print!("{}", table(summary));
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Number(n) => {
            if let Some(f) = n.as_f64().filter(|_| n.is_f64()) {
                if f.abs() >= 100.0 {
                    format!("{f:.1}")
                } else {
                    format!("{}", (f * 1000.0).round() / 1000.0)
                }
            } else {
                n.to_string()
            }
        }
        other => other.to_string(),
    }
}

fn flatten(prefix: &str, v: &Value, rows: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) if m.is_empty() => rows.push((prefix.to_owned(), "-".into())),
        Value::Object(m) => {
            // A latency summary reads best on one line.
            if m.contains_key("p50_ms") && m.contains_key("p99_ms") {
                let parts: Vec<String> = [
                    "count", "p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms", "mean_ms",
                ]
                .iter()
                .filter_map(|k| {
                    m.get(*k)
                        .map(|x| format!("{}={}", k.trim_end_matches("_ms"), scalar(x)))
                })
                .collect();
                rows.push((format!("{prefix} (ms)"), parts.join("  ")));
                return;
            }
            for (k, x) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, x, rows);
            }
        }
        Value::Array(a) if a.is_empty() => rows.push((prefix.to_owned(), "-".into())),
        Value::Array(a) if a.iter().all(|x| !x.is_object() && !x.is_array()) => rows.push((
            prefix.to_owned(),
            a.iter().map(scalar).collect::<Vec<_>>().join(", "),
        )),
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                flatten(&format!("{prefix}[{i}]"), x, rows);
            }
        }
        other => rows.push((prefix.to_owned(), scalar(other))),
    }
}

fn section(out: &mut String, title: &str, m: &Map<String, Value>) {
    let mut rows = Vec::new();
    for (k, v) in m {
        flatten(k, v, &mut rows);
    }
    if rows.is_empty() {
        return;
    }
    let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0).min(44);
    out.push_str(&format!("\n{title}\n"));
    for (k, v) in rows {
        out.push_str(&format!("  {k:<w$}  {v}\n"));
    }
}

/// The summary as a table: a header line, one section per object, then the checks.
pub fn table(s: &Value) -> String {
    let mut out = String::new();
    let ok = s.get("ok").and_then(Value::as_bool).unwrap_or(false);
    out.push_str(&format!(
        "livehub-loadtest {}: {}  (room {}, {}, {} s)\n",
        s.get("scenario").and_then(Value::as_str).unwrap_or("?"),
        if ok { "PASS" } else { "FAIL" },
        s.get("room").and_then(Value::as_str).unwrap_or("-"),
        s.get("url").and_then(Value::as_str).unwrap_or("-"),
        s.get("elapsed_s").map(scalar).unwrap_or_else(|| "-".into()),
    ));
    if let Some(Value::Object(m)) = s.get("params") {
        section(&mut out, "parameters", m);
    }
    if let Value::Object(m) = s {
        for (k, v) in m {
            if matches!(
                k.as_str(),
                "scenario" | "ok" | "room" | "url" | "elapsed_s" | "params" | "checks" | "problems"
            ) {
                continue;
            }
            match v {
                Value::Object(inner) => section(&mut out, k, inner),
                other => {
                    let mut one = Map::new();
                    one.insert(k.clone(), other.clone());
                    section(&mut out, k, &one);
                }
            }
        }
    }
    if let Some(Value::Array(checks)) = s.get("checks") {
        out.push_str("\nchecks\n");
        for c in checks {
            out.push_str(&format!(
                "  {}  {:<34} {}\n",
                if c.get("ok").and_then(Value::as_bool) == Some(true) {
                    "PASS"
                } else {
                    "FAIL"
                },
                c.get("name").and_then(Value::as_str).unwrap_or("?"),
                c.get("detail").and_then(Value::as_str).unwrap_or("")
            ));
        }
    }
    if let Some(Value::Array(p)) = s.get("problems") {
        if !p.is_empty() {
            out.push_str("\nproblems\n");
            for x in p {
                out.push_str(&format!("  {}\n", scalar(x)));
            }
        }
    }
    out
}
