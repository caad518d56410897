//! The Grafana dashboard and the Prometheus alert rules in fabric/deploy/observability/ name
//! only metrics a real node exposes. A node (data plane and ACLs on, so every family is there)
//! is scraped; every metric family name in its `# TYPE` lines gives the series names a query
//! can use (a counter `x` is `x_total`, a histogram `x` is `x_bucket`, `x_sum` and `x_count`);
//! every PromQL expression of the dashboard (panel targets and the instance variable's
//! `label_values` query) and of the alert rules is tokenised and each metric name it references
//! must be one of them. The extractor is tested on its own, the check is shown to fail on a
//! dashboard naming a bogus metric, and `promtool check rules` validates the rule file.

#![allow(
    clippy::disallowed_methods,
    reason = "a test harness measures wall-clock deadlines of real processes; cores never do"
)]

mod common;

use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::{fast_config, start_node};

/// PromQL words that are not metric names: aggregations, binary and set operators, modifiers
/// and literals. Functions are recognised by the `(` that follows them.
const KEYWORDS: [&str; 28] = [
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
    "and",
    "or",
    "unless",
    "atan2",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "inf",
    "nan",
];

/// Series Prometheus itself adds to every scrape target.
const SCRAPE_SERIES: [&str; 5] = [
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
];

/// Skips a quoted string starting at `i` (the quote); returns the index after it.
fn skip_string(b: &[u8], i: usize) -> usize {
    let quote = b[i];
    let mut j = i + 1;
    while j < b.len() && b[j] != quote {
        if b[j] == b'\\' && quote != b'`' {
            j += 1;
        }
        j += 1;
    }
    j + 1
}

/// Skips a bracketed group (`{…}`, `[…]`, `(…)`) starting at `i`, strings inside included;
/// returns the index after its closing bracket.
fn skip_group(b: &[u8], i: usize) -> usize {
    let (open, close) = (
        b[i],
        match b[i] {
            b'{' => b'}',
            b'[' => b']',
            _ => b')',
        },
    );
    let mut depth = 0;
    let mut j = i;
    while j < b.len() {
        match b[j] {
            b'"' | b'\'' | b'`' => {
                j = skip_string(b, j);
                continue;
            }
            c if c == open => depth += 1,
            c if c == close => {
                depth -= 1;
                if depth == 0 {
                    return j + 1;
                }
            }
            _ => {}
        }
        j += 1;
    }
    j
}

fn ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c == b':'
}

fn ident_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b':'
}

/// The metric names a PromQL expression references: identifiers that are not keywords, not
/// function names (followed by `(`), not inside label matchers `{…}`, range or subquery
/// brackets `[…]`, strings, or the label lists of `by`/`without`/`on`/`ignoring`/
/// `group_left`/`group_right`; Grafana variables (`$x`, `${x}`) and numbers (`0.99`, `5m`,
/// `1e3`) are skipped.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let b = expr.as_bytes();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'"' | b'\'' | b'`' => i = skip_string(b, i),
            b'{' | b'[' => i = skip_group(b, i),
            b'$' => {
                i += 1;
                if b.get(i) == Some(&b'{') {
                    i = skip_group(b, i);
                } else {
                    while i < b.len() && ident_char(b[i]) {
                        i += 1;
                    }
                }
            }
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            c if c.is_ascii_digit()
                || (c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit)) =>
            {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                    i += 1;
                }
            }
            c if ident_start(c) => {
                let start = i;
                while i < b.len() && ident_char(b[i]) {
                    i += 1;
                }
                let word = &expr[start..i];
                let mut next = i;
                while next < b.len() && b[next].is_ascii_whitespace() {
                    next += 1;
                }
                let lower = word.to_ascii_lowercase();
                let followed_by_paren = b.get(next) == Some(&b'(');
                if matches!(
                    lower.as_str(),
                    "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
                ) {
                    if followed_by_paren {
                        i = skip_group(b, next);
                    }
                } else if !followed_by_paren && !KEYWORDS.contains(&lower.as_str()) {
                    names.insert(word.to_owned());
                }
            }
            _ => i += 1,
        }
    }
    names
}

/// Series names a scrape exposes, from its `# TYPE` lines.
fn exposed(metrics: &str) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = SCRAPE_SERIES.iter().map(|s| (*s).to_owned()).collect();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
            panic!("malformed TYPE line: {line}");
        };
        let suffixes: &[&str] = match kind {
            "counter" => &["_total", "_created"],
            "histogram" | "gaugehistogram" => &["_bucket", "_sum", "_count", "_created"],
            "summary" => &["", "_sum", "_count", "_created"],
            "info" => &["_info"],
            _ => &[""],
        };
        for s in suffixes {
            out.insert(format!("{name}{s}"));
        }
    }
    out
}

/// The `expr` of every rule in a Prometheus rule file: `expr: <one line>` or a folded or
/// literal block (`expr: >-`, `|`) of more-indented lines.
fn rule_exprs(yaml: &str) -> Vec<String> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start();
        i += 1;
        let Some(value) = trimmed.strip_prefix("expr:") else {
            continue;
        };
        let value = value.trim();
        if value.starts_with(['>', '|']) {
            let indent = line.len() - trimmed.len();
            let mut block = Vec::new();
            while i < lines.len() {
                let l = lines[i];
                let t = l.trim_start();
                if !t.is_empty() && l.len() - t.len() <= indent {
                    break;
                }
                block.push(t);
                i += 1;
            }
            out.push(block.join(" "));
        } else {
            out.push(value.trim_matches(['"', '\'']).to_owned());
        }
    }
    out
}

/// Every PromQL expression of a Grafana dashboard: panel targets (rows' nested panels too) and
/// query variables (`label_values(metric, label)` gives `metric`).
fn dashboard_exprs(dashboard: &Value) -> Vec<String> {
    fn panels(v: &Value, out: &mut Vec<String>) {
        for p in v.as_array().into_iter().flatten() {
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(e) = t["expr"].as_str() {
                    out.push(e.to_owned());
                }
            }
            panels(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    panels(&dashboard["panels"], &mut out);
    for var in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if var["type"] != "query" {
            continue;
        }
        let q = var["query"]["query"]
            .as_str()
            .or_else(|| var["query"].as_str())
            .expect("a query variable has a query");
        let q = match q.strip_prefix("label_values(") {
            Some(args) => args.split(',').next().expect("a metric").trim().to_owned(),
            None => q.to_owned(),
        };
        out.push(q);
    }
    out
}

/// `(expression, metric)` for every metric an expression names that is not exposed.
fn unknown(exprs: &[String], exposed: &BTreeSet<String>) -> Vec<(String, String)> {
    exprs
        .iter()
        .flat_map(|e| {
            metric_names(e)
                .into_iter()
                .filter(|m| !exposed.contains(m))
                .map(|m| (e.clone(), m))
        })
        .collect()
}

fn observability_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/observability")
}

#[test]
fn the_extractor_skips_functions_labels_strings_and_clauses() {
    let names = |e: &str| metric_names(e).into_iter().collect::<Vec<_>>();
    assert_eq!(
        names(
            r#"histogram_quantile(0.99, sum by (le, instance) (rate(nexus_a_bucket{instance=~"$instance", le!="+Inf"}[$__rate_interval])))"#
        ),
        ["nexus_a_bucket"]
    );
    assert_eq!(
        names(
            "sum by (instance) (rate(x_total[5m])) / on (instance) group_left (role) y > 0.05 and sum without (reason) (z) > 1"
        ),
        ["x_total", "y", "z"]
    );
    // Label values that look like metrics, regexes, offsets, numbers, bool, variables.
    assert_eq!(
        names(
            r#"max(nexus_ca_role{state=~"leader|up", job='nexus'}) < bool 4 offset 5m + count(up == 1e3) * ${factor} - $k"#
        ),
        ["nexus_ca_role", "up"]
    );
    assert_eq!(names(r#"changes(m{a="}{[("}[15m:1m])"#), ["m"]);
    assert_eq!(names("label_join(up, \"x\", \",\", \"a\")"), ["up"]);
    assert_eq!(names("1 + 2 * .5"), Vec::<String>::new());
    assert_eq!(
        names("a:recorded:rate5m unless on() vector(0)"),
        ["a:recorded:rate5m"]
    );

    let exposed = exposed(
        "# TYPE nexus_c counter\nnexus_c_total 1\n# TYPE nexus_h histogram\n\
         # TYPE nexus_g gauge\nnexus_g 2\n# EOF\n",
    );
    for name in [
        "nexus_c_total",
        "nexus_h_bucket",
        "nexus_h_sum",
        "nexus_h_count",
        "nexus_g",
        "up",
    ] {
        assert!(exposed.contains(name), "{name}");
    }
    for name in ["nexus_c", "nexus_h", "nexus_g_total"] {
        assert!(!exposed.contains(name), "{name}");
    }

    let yaml = "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up == 0\n        for: 1m\n      - alert: B\n        expr: >-\n          rate(a_total[5m])\n            > 1\n        for: 5m\n";
    assert_eq!(rule_exprs(yaml), ["up == 0", "rate(a_total[5m]) > 1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_and_alerts_name_only_metrics_a_node_exposes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = "observability-test-token-0123456789";
    let node = start_node(
        "n1",
        &dir.path().join("n1"),
        &[],
        &format!("dataplane = \"127.0.0.1:0\"\n{}", fast_config("")),
        Some(token),
    );
    let http = reqwest::Client::new();
    // A refused request, so the admin refusal family has a label too.
    let refused = http
        .get(format!("{}/v1/members", node.admin))
        .bearer_auth("not-a-token")
        .send()
        .await
        .expect("GET");
    assert_eq!(refused.status().as_u16(), 401);
    let metrics = http
        .get(format!("{}/metrics", node.admin))
        .bearer_auth(token)
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("text");
    let exposed = exposed(&metrics);
    assert!(exposed.len() > 50, "{metrics}");

    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(observability_dir().join("grafana/nexus.json")).expect("read"),
    )
    .expect("the dashboard is JSON");
    let vars: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .expect("templating")
        .iter()
        .map(|v| v["type"].as_str().expect("type"))
        .collect();
    assert!(
        vars.contains(&"datasource") && vars.contains(&"query"),
        "{vars:?}"
    );
    let panel_exprs = dashboard_exprs(&dashboard);
    assert!(panel_exprs.len() > 30, "{panel_exprs:?}");
    let alerts =
        std::fs::read_to_string(observability_dir().join("prometheus/alerts.yml")).expect("read");
    let alert_exprs = rule_exprs(&alerts);
    assert_eq!(
        alert_exprs.len(),
        alerts.matches("- alert:").count(),
        "one expr per rule"
    );

    for (what, exprs) in [("dashboard", &panel_exprs), ("alerts", &alert_exprs)] {
        let bad = unknown(exprs, &exposed);
        assert!(
            bad.is_empty(),
            "{what} names metrics the node does not expose: {bad:#?}"
        );
        for e in exprs.iter() {
            assert!(!metric_names(e).is_empty(), "{what}: no metric in {e}");
        }
    }
    // Each row's subject is covered.
    let all: BTreeSet<String> = panel_exprs.iter().flat_map(|e| metric_names(e)).collect();
    for needed in [
        "nexus_members",
        "nexus_registry_adverts_applied_total",
        "nexus_ca_commit_seconds_bucket",
        "nexus_dataplane_dropped_total",
        "nexus_stream_sessions",
        "nexus_gossip_dropped_total",
        "nexus_admin_auth_failures_total",
    ] {
        assert!(all.contains(needed), "the dashboard shows {needed}");
    }

    // The check fails when a dashboard names a metric no node has.
    let mut bogus = dashboard.clone();
    bogus["panels"][1]["targets"][0]["expr"] =
        Value::from("sum(rate(nexus_bogus_frames_total{instance=~\"$instance\"}[5m]))");
    let bad = unknown(&dashboard_exprs(&bogus), &exposed);
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert_eq!(bad[0].1, "nexus_bogus_frames_total");
}

/// `promtool` from Debian's `prometheus` package (.ci/run installs it).
#[test]
fn promtool_accepts_the_alert_rules() {
    let promtool = ["/usr/bin/promtool", "/usr/local/bin/promtool"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("promtool not found: install Debian's prometheus package (.ci/run does)");
    let rules = observability_dir().join("prometheus/alerts.yml");
    let out = std::process::Command::new(&promtool)
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .expect("run promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    let alerts = std::fs::read_to_string(&rules).expect("read");
    let rules_n = alerts.matches("- alert:").count();
    assert!(
        text.contains(&format!("SUCCESS: {rules_n} rules found")),
        "{text}"
    );
    // And it refuses a broken rule, so the check can fail.
    let dir = tempfile::tempdir().expect("tempdir");
    let broken = dir.path().join("broken.yml");
    std::fs::write(
        &broken,
        "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: sum(rate(x[5m])\n",
    )
    .expect("write");
    let out = std::process::Command::new(&promtool)
        .args(["check", "rules"])
        .arg(&broken)
        .output()
        .expect("run promtool");
    assert!(
        !out.status.success(),
        "promtool accepted an unbalanced expression"
    );
}
