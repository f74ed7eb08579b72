//! `--report FILE.html`: one self-contained page (ECharts inlined) with throughput and
//! p50/p99 latency over time, the latency distribution, connections over time, and the
//! machine's own stalls over time (the hiccup meter's, [`crate::hiccups`]).

use std::path::Path;

use anyhow::Context as _;
use serde_json::{json, Value};

use crate::record::Finished;

/// ECharts 6.1.0 (Apache-2.0; see static/vendor/echarts.LICENSE in the livehub repository).
const ECHARTS: &str = include_str!("../../static/vendor/echarts.min.js");

fn esc_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// JSON that is safe inside a `<script>` element.
fn script_json(v: &Value) -> String {
    serde_json::to_string(v)
        .expect("report data serializes")
        .replace("</", "<\\/")
        .replace("<!--", "<\\!--")
}

pub fn write(
    path: &Path,
    summary: &Value,
    table: &str,
    recs: &[Finished],
    conns: &[(f64, i64)],
    stalls: &[Value],
) -> anyhow::Result<()> {
    let series: Vec<Value> = recs
        .iter()
        .map(|r| {
            json!({
                "name": r.name,
                "bucket_s": r.bucket_s,
                "points": r.points.iter().map(|p| json!([p.t, p.rate, p.p50_ms, p.p99_ms, p.max_ms])).collect::<Vec<_>>(),
                "dist": r.distribution(),
                "dist_ok": r.distribution_ok(),
            })
        })
        .collect();
    let data = json!({
        "title": format!("livehub-loadtest {} — {}", summary["scenario"].as_str().unwrap_or("?"), if summary["ok"].as_bool() == Some(true) { "PASS" } else { "FAIL" }),
        "series": series,
        "conns": conns.iter().map(|(t, n)| json!([t, n])).collect::<Vec<_>>(),
        "stalls": stalls,
        "summary": summary,
    });
    let html = format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>{title}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #1d2129; background: #fafafa; }}
h1 {{ font-size: 20px; }}
.chart {{ width: 100%; height: 340px; background: #fff; border: 1px solid #e5e6eb; border-radius: 6px; margin: 16px 0; }}
pre {{ background: #fff; border: 1px solid #e5e6eb; border-radius: 6px; padding: 12px; overflow-x: auto; font-size: 12px; }}
</style>
<script>
/* ECharts 6.1.0 — Apache License 2.0 (bundles zrender, BSD-3-Clause). */
{echarts}
</script>
</head><body>
<h1>{title}</h1>
<div id="thr" class="chart"></div>
<div id="lat" class="chart"></div>
<div id="dist" class="chart"></div>
<div id="conns" class="chart"></div>
<div id="stalls" class="chart"></div>
<h2>Summary</h2>
<pre>{table}</pre>
<script>
const DATA = {data};
function chart(id, title, opt) {{
  const c = echarts.init(document.getElementById(id));
  c.setOption(Object.assign({{ animation: false, tooltip: {{ trigger: 'axis' }}, title: {{ text: title, left: 8, top: 6, textStyle: {{ fontSize: 14 }} }}, legend: {{ right: 16, top: 8 }}, grid: {{ left: 64, right: 32, top: 56, bottom: 40 }} }}, opt));
  window.addEventListener('resize', () => c.resize());
}}
const xs = {{ type: 'value', name: 's', min: 0 }};
// A short run has few points, some of them alone between empty buckets: draw them as dots.
const few = s => s.points.filter(p => p[1] > 0).length < 30;
chart('thr', 'Throughput (per second)', {{
  xAxis: xs, yAxis: {{ type: 'value', name: '/s' }},
  series: DATA.series.map(s => ({{ name: s.name + '/s', type: 'line', showSymbol: false, data: s.points.map(p => [p[0], p[1]]) }}))
}});
chart('lat', 'Latency over time (ms)', {{
  xAxis: xs, yAxis: {{ type: 'value', name: 'ms' }},
  series: DATA.series.flatMap(s => [
    {{ name: s.name + ' p50', type: 'line', showSymbol: few(s), connectNulls: false, data: s.points.map(p => [p[0], p[2]]) }},
    {{ name: s.name + ' p99', type: 'line', showSymbol: few(s), connectNulls: false, data: s.points.map(p => [p[0], p[3]]) }},
  ])
}});
const pct = DATA.series.length ? (DATA.series.find(s => s.dist.length) || DATA.series[0]).dist.map(d => String(d[0])) : [];
chart('dist', 'Latency distribution (ms at percentile)', {{
 
  xAxis: {{ type: 'category', name: 'percentile', data: pct }}, yAxis: {{ type: 'log', name: 'ms', min: 0.01 }},
  series: DATA.series.filter(s => s.dist.length).flatMap(s => [
    {{ name: s.name, type: 'line', data: s.dist.map(d => Math.max(d[1], 0.001)) }},
    ...(s.dist_ok.length ? [{{ name: s.name + ' (ok acks)', type: 'line', lineStyle: {{ type: 'dashed' }}, data: s.dist_ok.map(d => Math.max(d[1], 0.001)) }}] : []),
  ])
}});
chart('conns', 'Open connections', {{
  xAxis: xs, yAxis: {{ type: 'value' }},
  series: [{{ name: 'connections', type: 'line', step: 'end', showSymbol: false, data: DATA.conns }}]
}});
// The load tool's hiccup meter: a thread asking to sleep 1 ms at a time. Each 100 ms in which it
// woke over 1 ms late shows its latest wake-up; a gap is a quiet 100 ms.
chart('stalls', 'The machine\'s stalls: latest wake-up of a 1 ms sleep, per 100 ms (ms late)', {{
  xAxis: xs, yAxis: {{ type: 'value', name: 'ms' }},
  tooltip: {{ trigger: 'item', formatter: p => `${{p.value[0]}} s: ${{p.value[1]}} ms late (${{p.value[2]}} wake-ups over 1 ms)` }},
  series: [{{ name: 'stalls', type: 'bar', barMaxWidth: 4, data: DATA.stalls }}]
}});
</script>
</body></html>
"#,
        title = esc_html(data["title"].as_str().unwrap_or("")),
        echarts = ECHARTS,
        table = esc_html(table),
        data = script_json(&data),
    );
    std::fs::write(path, html).with_context(|| format!("writing {}", path.display()))
}
