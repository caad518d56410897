//! `nexus sim compare A B`: two runs' reports side by side — the key figures with their
//! differences and ratios, the invariants' outcomes, and whether the trace hashes are equal.
//!
//! It reads `report.json` files (or run directories holding one) of [`REPORT_FORMAT`] and refuses
//! anything else with an error that names the file and what is wrong with it.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::report::{ConvergenceTimes, FaultSpan, LatencySummary, REPORT_FORMAT, Sample};

/// One verdict as read back from `report.json`.
#[derive(Clone, Debug, Deserialize)]
pub struct LoadedVerdict {
    /// Checker name.
    pub invariant: String,
    /// Whether it held.
    pub ok: bool,
    /// What was measured, or the first violation.
    pub detail: String,
    /// Virtual time of the first violation, seconds.
    pub violated_at_s: Option<f64>,
}

/// The part of a `report.json` that compare reads.
#[derive(Clone, Debug, Deserialize)]
pub struct LoadedReport {
    /// Layout version.
    pub format: u32,
    /// Scenario name.
    pub scenario: String,
    /// Seed.
    pub seed: u64,
    /// Nodes.
    pub nodes: usize,
    /// Virtual time simulated, seconds.
    pub virtual_s: f64,
    /// Wall-clock time taken, seconds.
    pub wall_s: f64,
    /// Datagrams delivered.
    pub messages: u64,
    /// Bytes delivered.
    pub bytes: u64,
    /// Datagrams dropped.
    pub dropped: u64,
    /// Hash of the event trace.
    pub trace_hash: String,
    /// Whether every invariant held.
    pub ok: bool,
    /// One verdict per checker.
    pub invariants: Vec<LoadedVerdict>,
    /// The convergence curve.
    pub samples: Vec<Sample>,
    /// Convergence times.
    pub convergence: ConvergenceTimes,
    /// Delivery latency, if the run measured one.
    pub latency: Option<LatencySummary>,
    /// Fault spans.
    pub faults: Vec<FaultSpan>,
}

/// Why a report could not be read (`nexus sim compare` exits 2 on it).
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct LoadError {
    /// The file.
    pub path: String,
    /// What is wrong with it.
    pub message: String,
}

/// Reads a report: `path` is a `report.json` or a run directory holding one.
pub fn load(path: &Path) -> Result<(PathBuf, LoadedReport), LoadError> {
    let file = if path.is_dir() {
        path.join("report.json")
    } else {
        path.to_owned()
    };
    let err = |message: String| LoadError {
        path: file.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(&file).map_err(|e| err(format!("cannot read: {e}")))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| err(format!("not JSON: {e}")))?;
    match value.get("format").and_then(serde_json::Value::as_u64) {
        None => {
            return Err(err(format!(
                "not a nexus sim report of format {REPORT_FORMAT} (no `format` field: written by \
                 an older nexus, or not a report); run the scenario again with this nexus"
            )));
        }
        Some(f) if f != u64::from(REPORT_FORMAT) => {
            return Err(err(format!(
                "report format {f}, this nexus reads format {REPORT_FORMAT}; run the scenario \
                 again with this nexus"
            )));
        }
        Some(_) => {}
    }
    let report: LoadedReport =
        serde_json::from_value(value).map_err(|e| err(format!("not a nexus sim report: {e}")))?;
    Ok((file, report))
}

/// One run's identity in a comparison.
#[derive(Clone, Debug, Serialize)]
pub struct Side {
    /// The report file.
    pub path: String,
    /// Scenario name.
    pub scenario: String,
    /// Seed.
    pub seed: u64,
    /// Nodes.
    pub nodes: usize,
    /// Whether every invariant held.
    pub ok: bool,
    /// Trace hash.
    pub trace_hash: String,
}

/// One figure of both runs.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// What it is.
    pub figure: String,
    /// Unit (`s`, `ms`, or empty for counts).
    pub unit: &'static str,
    /// A's value; `None` if A does not have it (e.g. never converged).
    pub a: Option<f64>,
    /// B's value.
    pub b: Option<f64>,
    /// `b - a`.
    pub delta: Option<f64>,
    /// `b / a` (1 when both are 0; `None` when only `a` is 0).
    pub ratio: Option<f64>,
}

/// One invariant's outcome in a run.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    /// Whether it held.
    pub ok: bool,
    /// When it was first violated, virtual seconds.
    pub violated_at_s: Option<f64>,
}

/// One invariant in both runs.
#[derive(Clone, Debug, Serialize)]
pub struct InvariantRow {
    /// Checker name.
    pub invariant: String,
    /// A's outcome; `None` if A did not run this checker.
    pub a: Option<Outcome>,
    /// B's outcome.
    pub b: Option<Outcome>,
}

fn outcome_text(o: &Option<Outcome>) -> String {
    match o {
        None => "not run".into(),
        Some(Outcome { ok: true, .. }) => "ok".into(),
        Some(Outcome {
            violated_at_s: Some(t),
            ..
        }) => format!("FAIL at {t:.3} s"),
        Some(Outcome { .. }) => "FAIL at the end".into(),
    }
}

impl InvariantRow {
    /// A's outcome as text (`ok`, `FAIL at 9.000 s`, `not run`).
    pub fn a_text(&self) -> String {
        outcome_text(&self.a)
    }

    /// B's outcome as text.
    pub fn b_text(&self) -> String {
        outcome_text(&self.b)
    }
}

/// Two runs side by side.
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    /// Run A.
    pub a: Side,
    /// Run B.
    pub b: Side,
    /// Whether the trace hashes are equal (the same run, event for event).
    pub trace_hash_equal: bool,
    /// The figures.
    pub rows: Vec<Row>,
    /// The invariants, in A's order, then B's extra ones.
    pub invariants: Vec<InvariantRow>,
    /// Whether both runs passed every invariant.
    pub both_passed: bool,
}

fn side(path: &Path, r: &LoadedReport) -> Side {
    Side {
        path: path.display().to_string(),
        scenario: r.scenario.clone(),
        seed: r.seed,
        nodes: r.nodes,
        ok: r.ok,
        trace_hash: r.trace_hash.clone(),
    }
}

fn row(figure: &str, unit: &'static str, a: Option<f64>, b: Option<f64>) -> Row {
    let (delta, ratio) = match (a, b) {
        (Some(a), Some(b)) => (
            Some(b - a),
            if a == 0.0 && b == 0.0 {
                Some(1.0)
            } else if a == 0.0 {
                None
            } else {
                Some(b / a)
            },
        ),
        _ => (None, None),
    };
    Row {
        figure: figure.to_owned(),
        unit,
        a,
        b,
        delta,
        ratio,
    }
}

/// Compares two loaded reports.
pub fn compare(a_path: &Path, a: &LoadedReport, b_path: &Path, b: &LoadedReport) -> Comparison {
    let mut rows = vec![
        row(
            "convergence 50 %",
            "s",
            a.convergence.p50_s,
            b.convergence.p50_s,
        ),
        row(
            "convergence 99 %",
            "s",
            a.convergence.p99_s,
            b.convergence.p99_s,
        ),
        row(
            "convergence 100 %",
            "s",
            a.convergence.all_s,
            b.convergence.all_s,
        ),
    ];
    if a.latency.is_some() || b.latency.is_some() {
        type Pick = fn(&LatencySummary) -> f64;
        let picks: [(&str, Pick); 4] = [
            ("latency p50", |l| l.p50_ms),
            ("latency p90", |l| l.p90_ms),
            ("latency p99", |l| l.p99_ms),
            ("latency max", |l| l.max_ms),
        ];
        for (name, pick) in picks {
            rows.push(row(
                name,
                "ms",
                a.latency.as_ref().map(pick),
                b.latency.as_ref().map(pick),
            ));
        }
    }
    let count = |v: u64| Some(v as f64);
    rows.extend([
        row(
            "datagrams delivered",
            "",
            count(a.messages),
            count(b.messages),
        ),
        row("bytes delivered", "", count(a.bytes), count(b.bytes)),
        row("datagrams dropped", "", count(a.dropped), count(b.dropped)),
        row("virtual time", "s", Some(a.virtual_s), Some(b.virtual_s)),
        row("wall time", "s", Some(a.wall_s), Some(b.wall_s)),
    ]);
    let mut names: Vec<String> = Vec::new();
    let mut seen = BTreeSet::new();
    for v in a.invariants.iter().chain(&b.invariants) {
        if seen.insert(v.invariant.clone()) {
            names.push(v.invariant.clone());
        }
    }
    let find = |r: &LoadedReport, name: &str| {
        r.invariants
            .iter()
            .find(|v| v.invariant == name)
            .map(|v| Outcome {
                ok: v.ok,
                violated_at_s: v.violated_at_s,
            })
    };
    let invariants = names
        .into_iter()
        .map(|name| InvariantRow {
            a: find(a, &name),
            b: find(b, &name),
            invariant: name,
        })
        .collect();
    Comparison {
        a: side(a_path, a),
        b: side(b_path, b),
        trace_hash_equal: a.trace_hash == b.trace_hash,
        rows,
        invariants,
        both_passed: a.ok && b.ok,
    }
}

fn cell(v: Option<f64>, unit: &str) -> String {
    match v {
        None => "—".into(),
        Some(x) if unit.is_empty() && x.fract() == 0.0 && x.abs() < 1e15 => format!("{x:.0}"),
        Some(x) if unit == "ms" => format!("{x:.2}"),
        Some(x) => format!("{x:.3}"),
    }
}

impl Comparison {
    /// The comparison as a table for people.
    pub fn table(&self) -> String {
        let mut out = String::new();
        for (tag, s) in [("A", &self.a), ("B", &self.b)] {
            let _ = writeln!(
                out,
                "{tag}: {} seed {}, {} nodes, {} ({})",
                s.scenario,
                s.seed,
                s.nodes,
                if s.ok { "passed" } else { "FAILED" },
                s.path
            );
        }
        let _ = writeln!(
            out,
            "{:<26} {:>14} {:>14} {:>14} {:>7}",
            "figure", "A", "B", "B - A", "B / A"
        );
        for r in &self.rows {
            let name = if r.unit.is_empty() {
                r.figure.clone()
            } else {
                format!("{} ({})", r.figure, r.unit)
            };
            let _ = writeln!(
                out,
                "{:<26} {:>14} {:>14} {:>14} {:>7}",
                name,
                cell(r.a, r.unit),
                cell(r.b, r.unit),
                cell(r.delta, r.unit),
                r.ratio.map_or_else(|| "—".into(), |x| format!("{x:.2}")),
            );
        }
        let _ = writeln!(
            out,
            "{:<26} {:>14} {:>14} {}",
            "trace hash",
            self.a.trace_hash,
            self.b.trace_hash,
            if self.trace_hash_equal {
                "equal"
            } else {
                "different"
            }
        );
        out.push_str("invariants:\n");
        for inv in &self.invariants {
            let _ = writeln!(
                out,
                "  {:<24} {:>14} {:>14}",
                inv.invariant,
                inv.a_text(),
                inv.b_text()
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(seed: u64, ok: bool, messages: u64) -> LoadedReport {
        LoadedReport {
            format: REPORT_FORMAT,
            scenario: "s".into(),
            seed,
            nodes: 4,
            virtual_s: 10.0,
            wall_s: 0.5,
            messages,
            bytes: messages * 100,
            dropped: 0,
            trace_hash: format!("{seed:016x}"),
            ok,
            invariants: vec![LoadedVerdict {
                invariant: "agreement".into(),
                ok,
                detail: String::new(),
                violated_at_s: (!ok).then_some(9.0),
            }],
            samples: Vec::new(),
            convergence: ConvergenceTimes {
                from_s: 0.0,
                p50_s: Some(1.0),
                p99_s: Some(2.0),
                all_s: None,
            },
            latency: None,
            faults: Vec::new(),
        }
    }

    #[test]
    fn deltas_ratios_and_outcomes() {
        let (a, b) = (report(1, true, 100), report(2, false, 150));
        let c = compare(Path::new("a"), &a, Path::new("b"), &b);
        assert!(!c.trace_hash_equal && !c.both_passed);
        let msgs = c
            .rows
            .iter()
            .find(|r| r.figure == "datagrams delivered")
            .expect("row");
        assert_eq!((msgs.delta, msgs.ratio), (Some(50.0), Some(1.5)));
        let all = c
            .rows
            .iter()
            .find(|r| r.figure == "convergence 100 %")
            .expect("row");
        assert_eq!((all.delta, all.ratio), (None, None));
        let dropped = c
            .rows
            .iter()
            .find(|r| r.figure == "datagrams dropped")
            .expect("row");
        assert_eq!(dropped.ratio, Some(1.0), "0 and 0 are equal");
        assert_eq!(c.invariants[0].b_text(), "FAIL at 9.000 s");
        let table = c.table();
        assert!(table.contains("1.50"), "{table}");
        assert!(table.contains("different"), "{table}");
    }

    #[test]
    fn unreadable_reports_name_the_file_and_the_fault() {
        let dir = tempfile::tempdir().expect("tmp");
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, "{not json").expect("write");
        let e = load(&bad).expect_err("bad JSON");
        assert!(e.to_string().contains("bad.json: not JSON"), "{e}");
        std::fs::write(&bad, "{\"scenario\": \"x\"}").expect("write");
        let e = load(&bad).expect_err("no format");
        assert!(e.to_string().contains("no `format` field"), "{e}");
        std::fs::write(&bad, "{\"format\": 99}").expect("write");
        let e = load(&bad).expect_err("other format");
        assert!(e.to_string().contains("report format 99"), "{e}");
        std::fs::write(&bad, "{\"format\": 1}").expect("write");
        let e = load(&bad).expect_err("missing fields");
        assert!(e.to_string().contains("not a nexus sim report"), "{e}");
        let e = load(dir.path()).expect_err("a directory without report.json");
        assert!(e.to_string().contains("report.json: cannot read"), "{e}");
    }
}
