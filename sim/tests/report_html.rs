//! The run report as people read it: `report.html` parses as XML, holds one SVG per plot with
//! the right number of curves, lanes and fault spans, marks a violation where it happened,
//! escapes every name; the fault schedule and the latency distribution reach the report.

mod common;

use common::{run, scenario};
use nexus_sim::Scenario;

/// Parses a page and returns the elements with `class` containing `class`, under the `<svg>`
/// elements, per SVG.
fn by_class<'a>(
    doc: &'a roxmltree::Document<'a>,
    class: &str,
) -> Vec<Vec<roxmltree::Node<'a, 'a>>> {
    doc.descendants()
        .filter(|n| n.has_tag_name("svg"))
        .map(|svg| {
            svg.descendants()
                .filter(|n| {
                    n.attribute("class")
                        .is_some_and(|c| c.split(' ').any(|w| w == class))
                })
                .collect()
        })
        .collect()
}

#[test]
fn a_failing_run_has_its_curves_lanes_violation_and_faults_in_the_page() {
    let s = scenario("tests/scenarios/too-short-bound.toml");
    let mut r = run(&s, 5);
    assert!(!r.ok);
    // A name that needs escaping everywhere it appears.
    r.scenario = "too-short <bound> & \"quotes\"".into();
    let html = nexus_sim::html::run_report(&r);
    let doc = roxmltree::Document::parse_with_options(
        &html,
        roxmltree::ParsingOptions {
            allow_dtd: true,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("well-formed: {e}"));
    assert!(!html.contains("<bound>") && !html.contains("<script"));
    let h1 = doc
        .descendants()
        .find(|n| n.has_tag_name("h1"))
        .and_then(|n| n.text());
    assert_eq!(h1, Some("too-short <bound> & \"quotes\""));
    // Charts: convergence, invariant lanes (no latency in this kind of run).
    let svgs = doc.descendants().filter(|n| n.has_tag_name("svg")).count();
    assert_eq!(svgs, 2, "convergence and invariants");
    let series = by_class(&doc, "series");
    assert_eq!(series[0].len(), 2, "converged and healthy curves");
    let lanes = by_class(&doc, "lane");
    assert_eq!(lanes[1].len(), r.invariants.len(), "one lane per invariant");
    let failed: Vec<&str> = r
        .invariants
        .iter()
        .filter(|v| !v.ok)
        .map(|v| v.invariant)
        .collect();
    let red: Vec<&str> = by_class(&doc, "violated")[1]
        .iter()
        .filter(|n| n.has_tag_name("g"))
        .filter_map(|n| n.attribute("data-name"))
        .collect();
    assert_eq!(red, failed);
    assert_eq!(by_class(&doc, "violation")[1].len(), failed.len());
    let v = r.first_failure().expect("a failure");
    let at = format!("violated at {:.3} s", v.violated_at_s.expect("time"));
    assert!(html.contains(&at), "the violation time is written: {at}");
    // The permanent partition from 8 s is shaded on both time charts, to the end.
    assert_eq!(r.faults.len(), 1);
    assert_eq!(
        (
            r.faults[0].kind.as_str(),
            r.faults[0].from_s,
            r.faults[0].to_s
        ),
        ("partition", 8.0, None)
    );
    assert_eq!(r.faults[0].detail, "n1..n4 | n5..n8");
    let spans = by_class(&doc, "span");
    assert_eq!((spans[0].len(), spans[1].len()), (1, 1));
    // The convergence times count from the partition.
    assert_eq!(r.convergence.from_s, 8.0);
    // The standalone plot is the first chart of the page.
    let dir = tempfile::tempdir().expect("tmp");
    r.write_svg(&dir.path().join("c.svg")).expect("svg");
    let svg = std::fs::read_to_string(dir.path().join("c.svg")).expect("read");
    roxmltree::Document::parse(&svg).expect("standalone SVG parses");
    assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
}

#[test]
fn a_partial_view_run_reports_broadcast_latency() {
    let s = Scenario::parse(
        r#"
name = "probe-latency"
membership = "partial"
nodes = 40
duration = "30s"
sample_every = "1s"

[overlay]
keepalive_period = "1s"
keepalive_timeout = "4s"

[[timeline]]
at = "5s"
action = "kill"
nodes = ["n10..n12"]

[[timeline]]
at = "8s"
action = "restart"
nodes = ["n10..n12"]

[invariants]
converge_within = "10s"
broadcast_reach_min = 1.0
"#,
    )
    .expect("scenario");
    let r = run(&s, 2);
    assert!(r.ok, "{}", r.table());
    let l = r.latency.as_ref().expect("probes measured");
    assert!(l.what.contains("broadcast"));
    // Every probe reaches the other 39 nodes.
    assert_eq!(l.count % 39, 0, "{}", l.count);
    assert!(l.count >= 39);
    assert!(0.0 < l.p50_ms && l.p50_ms <= l.p90_ms && l.p90_ms <= l.p99_ms && l.p99_ms <= l.max_ms);
    assert_eq!(l.cdf.len(), 101);
    assert_eq!(l.cdf.last().map(|p| p.0), Some(l.max_ms));
    assert_eq!(r.faults.len(), 1);
    assert_eq!(r.faults[0].to_s, Some(8.0));
    assert_eq!(r.faults[0].nodes, 3);
    let html = nexus_sim::html::run_report(&r);
    let doc = roxmltree::Document::parse_with_options(
        &html,
        roxmltree::ParsingOptions {
            allow_dtd: true,
            ..Default::default()
        },
    )
    .expect("well-formed");
    let svgs = doc.descendants().filter(|n| n.has_tag_name("svg")).count();
    assert_eq!(svgs, 3, "convergence, latency CDF, invariants");
    assert_eq!(by_class(&doc, "series")[1].len(), 1, "one CDF");
}
