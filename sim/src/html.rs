//! Self-contained HTML pages: `report.html` of one run and `compare.html` of two
//! (`nexus sim compare`). Inline SVG ([`crate::plot`]) and inline CSS only — no script, no
//! external resource — so a page opens offline and can be attached to a bug report as one file.
//! Every text from a scenario or a report is escaped. The pages are well-formed XML as well as
//! HTML (every element closed), so ordinary XML tools can read them.

use std::fmt::Write as _;

use crate::compare::{Comparison, LoadedReport};
use crate::plot::{self, Lane, LineChart, PALETTE, Series, Span, escape};
use crate::report::{FaultSpan, LatencySummary, RunReport, Sample};
use crate::scenario::Mode;

const STYLE: &str = "body{font-family:sans-serif;margin:24px auto;max-width:880px;color:#222}\
h1{font-size:22px;margin-bottom:4px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ccc}\
table{border-collapse:collapse;margin:8px 0}td,th{padding:3px 10px;text-align:left;border-bottom:1px solid #eee;vertical-align:top}\
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}\
.pass{color:#0a6b2f;font-weight:bold}.fail{color:#b00000;font-weight:bold}\
code{font-size:13px}pre{background:#f6f6f6;padding:8px;overflow-x:auto;font-size:12px}\
p.note{color:#555;font-size:13px}";

fn head(out: &mut String, title: &str) {
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"/>\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"/>\
         <title>{}</title><style>{STYLE}</style></head><body>",
        escape(title)
    );
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "<span class=\"pass\">passed</span>"
    } else {
        "<span class=\"fail\">FAILED</span>"
    }
}

fn seconds(v: Option<f64>) -> String {
    v.map_or_else(|| "never".to_owned(), |s| format!("{s:.2} s"))
}

/// What the curve of a run measures.
fn curve_label(r: &RunReport) -> &'static str {
    if r.stream.is_some() {
        "intended sessions established"
    } else {
        "nodes with a correct view"
    }
}

/// Fault spans as chart spans (an open span runs to `end_s`).
pub fn fault_spans(faults: &[FaultSpan], end_s: f64) -> Vec<Span> {
    faults
        .iter()
        .map(|f| Span {
            from: f.from_s,
            to: f.to_s.unwrap_or(end_s),
            label: f.kind.clone(),
            detail: format!(
                "{} {:.1}–{} s: {}",
                f.kind,
                f.from_s,
                f.to_s
                    .map_or_else(|| "end".to_owned(), |t| format!("{t:.1}")),
                f.detail
            ),
        })
        .collect()
}

fn curve(samples: &[Sample]) -> Vec<(f64, f64)> {
    samples.iter().map(|s| (s.t_s, s.converged)).collect()
}

/// The convergence chart of a run (`convergence.svg` and the first chart of `report.html`).
pub fn convergence_chart(r: &RunReport) -> LineChart {
    let n = r.nodes.max(1) as f64;
    let mut series = vec![Series {
        name: curve_label(r).to_owned(),
        color: PALETTE[0],
        dashed: false,
        points: curve(&r.samples),
    }];
    if let Some(reg) = &r.registry {
        series.push(Series {
            name: "nodes holding the right services".into(),
            color: PALETTE[2],
            dashed: false,
            points: reg.curve.clone(),
        });
    }
    if r.stream.is_none() {
        series.push(Series {
            name: "healthy nodes".into(),
            color: PALETTE[1],
            dashed: true,
            points: r
                .samples
                .iter()
                .map(|s| (s.t_s, s.healthy as f64 / n))
                .collect(),
        });
    }
    LineChart {
        title: format!("{}: convergence (seed {})", r.scenario, r.seed),
        x_label: "virtual time (s)".into(),
        y_label: "share of nodes".into(),
        // CA and NexStream runs sample on through their settle period.
        x_max: r
            .samples
            .last()
            .map_or(r.virtual_s, |s| s.t_s.max(r.virtual_s)),
        y_max: 1.0,
        series,
        spans: fault_spans(&r.faults, r.virtual_s),
    }
}

fn latency_chart(title: &str, lat: &[(&str, &LatencySummary)]) -> String {
    plot::line_chart(&LineChart {
        title: title.to_owned(),
        x_label: "latency (ms)".into(),
        y_label: "share of deliveries".into(),
        // A long tail would squeeze the body of the curve into the first pixels: the axis
        // ends at 1.5 × p99 (the tables give the maximum).
        x_max: lat
            .iter()
            .map(|(_, l)| (l.p99_ms * 1.5).min(l.max_ms))
            .fold(0.0, f64::max),
        y_max: 1.0,
        series: lat
            .iter()
            .enumerate()
            .map(|(i, (name, l))| Series {
                name: (*name).to_owned(),
                color: PALETTE[i % PALETTE.len()],
                dashed: i > 0,
                // Steps: each percentile point is held until the next.
                points: l
                    .cdf
                    .windows(2)
                    .flat_map(|w| [w[0], (w[1].0, w[0].1)])
                    .chain(l.cdf.last().copied())
                    .collect(),
            })
            .collect(),
        spans: Vec::new(),
    })
}

fn latency_table(out: &mut String, l: &LatencySummary) {
    let _ = write!(
        out,
        "<table><tr><th>measurements</th><th class=\"num\">p50</th><th class=\"num\">p90</th>\
         <th class=\"num\">p99</th><th class=\"num\">max</th></tr><tr><td class=\"num\">{}</td>\
         <td class=\"num\">{:.2} ms</td><td class=\"num\">{:.2} ms</td><td class=\"num\">{:.2} ms</td>\
         <td class=\"num\">{:.2} ms</td></tr></table>",
        l.count, l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms
    );
}

/// `report.html` of one run.
pub fn run_report(r: &RunReport) -> String {
    let mut out = String::with_capacity(64 * 1024);
    head(
        &mut out,
        &format!("nexus sim: {} seed {}", r.scenario, r.seed),
    );
    let mode = match r.mode {
        Mode::Core => "core",
        Mode::Node => "node",
    };
    let _ = write!(
        out,
        "<header><h1>{name}</h1><p>{desc}</p><table class=\"summary\">\
         <tr><th>result</th><td>{verdict}</td></tr>\
         <tr><th>seed</th><td>{seed}</td></tr>\
         <tr><th>trace hash</th><td><code>{hash}</code> ({events} events)</td></tr>\
         <tr><th>nodes</th><td>{nodes} ({mode} mode)</td></tr>\
         <tr><th>virtual duration</th><td>{virt:.1} s</td></tr>\
         <tr><th>wall time</th><td>{wall:.2} s ({speed:.1}× real time)</td></tr>\
         <tr><th>datagrams</th><td>{msgs} delivered ({bytes} bytes), {dropped} dropped</td></tr>\
         </table></header>",
        name = escape(&r.scenario),
        desc = if r.ok {
            "Every invariant held."
        } else {
            "An invariant was violated: see the invariant timelines."
        },
        verdict = verdict(r.ok),
        seed = r.seed,
        hash = escape(&r.trace_hash),
        events = r.trace_events,
        nodes = r.nodes,
        virt = r.virtual_s,
        wall = r.wall_s,
        speed = r.speed,
        msgs = r.messages,
        bytes = r.bytes,
        dropped = r.dropped,
    );
    // Convergence.
    let _ = write!(
        out,
        "<section id=\"convergence\"><h2>Convergence</h2><p class=\"note\">Share of the nodes \
         over virtual time: {} (solid), healthy — running, not paused — (dashed){}; faults shaded.</p>{}",
        curve_label(r),
        if r.registry.is_some() {
            ", nodes holding exactly the live services of their component (green)"
        } else {
            ""
        },
        plot::line_chart(&convergence_chart(r))
    );
    let c = &r.convergence;
    let _ = write!(
        out,
        "<table><tr><th>after {:.1} s (the last timeline action)</th><th class=\"num\">50 %</th>\
         <th class=\"num\">99 %</th><th class=\"num\">100 %</th></tr><tr><td>reached</td>\
         <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr></table></section>",
        c.from_s,
        seconds(c.p50_s),
        seconds(c.p99_s),
        seconds(c.all_s)
    );
    // Latency.
    out.push_str("<section id=\"latency\"><h2>Delivery latency</h2>");
    match &r.latency {
        Some(l) => {
            let _ = write!(
                out,
                "<p class=\"note\">Cumulative distribution of {}; the axis ends at 1.5 × p99 \
                 or the maximum, whichever is smaller.</p>{}",
                escape(&l.what),
                latency_chart(&format!("{}: latency CDF", r.scenario), &[("this run", l)])
            );
            latency_table(&mut out, l);
        }
        None => out.push_str(
            "<p class=\"note\">This kind of run records no delivery latency (it is measured by \
             partial-view runs with broadcast probes and by registry runs with withdrawals).</p>",
        ),
    }
    out.push_str("</section>");
    // Invariants.
    let lanes: Vec<Lane> = r
        .invariants
        .iter()
        .map(|v| Lane {
            name: v.invariant.to_owned(),
            ok: v.ok,
            violated_at: v.violated_at_s,
            detail: v.detail.clone(),
        })
        .collect();
    let checks: Vec<f64> = r.samples.iter().map(|s| s.t_s).collect();
    let end = r
        .samples
        .last()
        .map_or(r.virtual_s, |s| s.t_s.max(r.virtual_s));
    let _ = write!(
        out,
        "<section id=\"invariants\"><h2>Invariants</h2><p class=\"note\">One lane per invariant over \
         virtual time: grey before the first sample, green while it held, red from its first \
         violation (the red line; hover for what was seen); ticks are the samples; faults \
         shaded.</p>{}<table><tr><th>invariant</th><th>result</th><th>detail</th></tr>",
        plot::lane_chart(
            &format!("{}: invariants", r.scenario),
            &lanes,
            end,
            &checks,
            &fault_spans(&r.faults, end)
        )
    );
    for v in &r.invariants {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}{}</td><td>{}</td></tr>",
            escape(v.invariant),
            verdict(v.ok),
            v.violated_at_s
                .map(|t| format!(" at {t:.3} s"))
                .unwrap_or_default(),
            escape(&v.detail)
        );
    }
    out.push_str("</table></section>");
    // Faults.
    out.push_str("<section id=\"faults\"><h2>Fault schedule</h2>");
    if r.faults.is_empty() {
        out.push_str("<p class=\"note\">The scenario injects no faults.</p>");
    } else {
        out.push_str(
            "<table><tr><th>fault</th><th class=\"num\">from</th><th class=\"num\">to</th>\
             <th class=\"num\">nodes</th><th>what</th></tr>",
        );
        for f in &r.faults {
            let _ = write!(
                out,
                "<tr><td>{}</td><td class=\"num\">{:.1} s</td><td class=\"num\">{}</td>\
                 <td class=\"num\">{}</td><td>{}</td></tr>",
                escape(&f.kind),
                f.from_s,
                f.to_s
                    .map_or_else(|| "the end".to_owned(), |t| format!("{t:.1} s")),
                if f.nodes == 0 {
                    "all".to_owned()
                } else {
                    f.nodes.to_string()
                },
                escape(&f.detail)
            );
        }
        out.push_str("</table>");
    }
    let _ = writeln!(
        out,
        "</section><section id=\"details\"><h2>Summary table</h2><pre>{}</pre></section>\
         <p class=\"note\">Reproduce: <code>nexus sim run &lt;scenario file&gt; --seed {}</code></p>\
         </body></html>",
        escape(&r.table()),
        r.seed
    );
    out
}

fn figure(v: Option<f64>) -> String {
    match v {
        None => "—".into(),
        Some(x) if x.fract() == 0.0 && x.abs() < 1e15 => format!("{x:.0}"),
        Some(x) => format!("{x:.3}"),
    }
}

/// `compare.html` of two runs.
pub fn compare_report(c: &Comparison, a: &LoadedReport, b: &LoadedReport) -> String {
    let mut out = String::with_capacity(64 * 1024);
    let title = format!(
        "nexus sim compare: {} seed {} vs {} seed {}",
        a.scenario, a.seed, b.scenario, b.seed
    );
    head(&mut out, &title);
    let _ = write!(
        out,
        "<h1>{}</h1><table class=\"summary\"><tr><th></th><th>A</th><th>B</th></tr>\
         <tr><th>report</th><td><code>{}</code></td><td><code>{}</code></td></tr>\
         <tr><th>scenario</th><td>{}</td><td>{}</td></tr>\
         <tr><th>seed</th><td>{}</td><td>{}</td></tr>\
         <tr><th>result</th><td>{}</td><td>{}</td></tr>\
         <tr><th>trace hash</th><td><code>{}</code></td><td><code>{}</code> ({})</td></tr></table>",
        escape(&title),
        escape(&c.a.path),
        escape(&c.b.path),
        escape(&a.scenario),
        escape(&b.scenario),
        a.seed,
        b.seed,
        verdict(a.ok),
        verdict(b.ok),
        escape(&a.trace_hash),
        escape(&b.trace_hash),
        if c.trace_hash_equal {
            "equal"
        } else {
            "different"
        },
    );
    let last = |r: &LoadedReport| {
        r.samples
            .last()
            .map_or(r.virtual_s, |s| s.t_s.max(r.virtual_s))
    };
    let end = last(a).max(last(b));
    let mut spans = fault_spans(&a.faults, a.virtual_s);
    if a.faults != b.faults {
        spans.extend(
            fault_spans(&b.faults, b.virtual_s)
                .into_iter()
                .map(|mut s| {
                    s.label = format!("B {}", s.label);
                    s
                }),
        );
    }
    let _ = write!(
        out,
        "<section id=\"convergence\"><h2>Convergence</h2><p class=\"note\">Share of the healthy \
         nodes with a correct view over virtual time, A solid, B dashed; faults shaded.</p>{}</section>",
        plot::line_chart(&LineChart {
            title: "convergence, A and B".into(),
            x_label: "virtual time (s)".into(),
            y_label: "share of nodes".into(),
            x_max: end,
            y_max: 1.0,
            series: vec![
                Series {
                    name: format!("A: {} seed {}", a.scenario, a.seed),
                    color: PALETTE[0],
                    dashed: false,
                    points: curve(&a.samples),
                },
                Series {
                    name: format!("B: {} seed {}", b.scenario, b.seed),
                    color: PALETTE[1],
                    dashed: true,
                    points: curve(&b.samples),
                },
            ],
            spans,
        })
    );
    let lat: Vec<(&str, &LatencySummary)> = [("A", &a.latency), ("B", &b.latency)]
        .into_iter()
        .filter_map(|(n, l)| l.as_ref().map(|l| (n, l)))
        .collect();
    if !lat.is_empty() {
        let _ = write!(
            out,
            "<section id=\"latency\"><h2>Delivery latency</h2>{}</section>",
            latency_chart("latency CDF, A and B", &lat)
        );
    }
    out.push_str(
        "<section id=\"figures\"><h2>Figures</h2><table><tr><th>figure</th><th class=\"num\">A</th>\
         <th class=\"num\">B</th><th class=\"num\">B − A</th><th class=\"num\">B / A</th></tr>",
    );
    for row in &c.rows {
        let _ = write!(
            out,
            "<tr><td>{}{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            escape(&row.figure),
            if row.unit.is_empty() {
                String::new()
            } else {
                format!(" ({})", row.unit)
            },
            figure(row.a),
            figure(row.b),
            figure(row.delta),
            row.ratio.map_or_else(|| "—".into(), |r| format!("{r:.2}")),
        );
    }
    out.push_str(
        "</table></section><section id=\"invariants\"><h2>Invariants</h2><table>\
         <tr><th>invariant</th><th>A</th><th>B</th></tr>",
    );
    for inv in &c.invariants {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&inv.invariant),
            escape(&inv.a_text()),
            escape(&inv.b_text())
        );
    }
    out.push_str("</table></section></body></html>\n");
    out
}
