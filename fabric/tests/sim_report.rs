//! `nexus sim run`'s HTML report and `nexus sim compare` as a user runs them: the page next to
//! report.json with its plots, compare of the same run twice (equal hashes, ratio 1.00) and of
//! two seeds (differing figures), exit codes 0/1/2, JSON output, compare.html, and no progress
//! bar on a stderr that is not a terminal.

#![allow(
    clippy::disallowed_methods,
    reason = "the shared harness measures wall-clock deadlines of real processes"
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::nexus;

fn scenario(rel: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../sim")
        .join(rel)
        .to_str()
        .expect("utf8")
        .to_owned()
}

fn sim(args: &[&str], cwd: &Path) -> Output {
    nexus()
        .arg("sim")
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run nexus sim")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs `scenario` with `seed` into `cwd/out` and returns that directory.
fn run_into(cwd: &Path, scenario_file: &str, seed: &str, out: &str, code: i32) -> PathBuf {
    let o = sim(
        &[
            "run",
            scenario_file,
            "--seed",
            seed,
            "--out",
            out,
            "--no-progress",
        ],
        cwd,
    );
    assert_eq!(o.status.code(), Some(code), "{}", text(&o.stderr));
    cwd.join(out)
}

/// The row of a figure in compare's table: its cells after the name.
fn table_row(stdout: &str, figure: &str) -> Vec<String> {
    let line = stdout
        .lines()
        .find(|l| l.starts_with(figure))
        .unwrap_or_else(|| panic!("no row {figure} in:\n{stdout}"));
    line[figure.len()..]
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[test]
fn html_report_and_compare_of_runs() {
    let dir = tempfile::tempdir().expect("tmp");
    let cwd = dir.path();
    let crash = scenario("scenarios/crash-restart.toml");
    let a = run_into(cwd, &crash, "7", "a", 0);
    let a2 = run_into(cwd, &crash, "7", "a2", 0);
    let b = run_into(cwd, &crash, "8", "b", 0);
    let failing = run_into(
        cwd,
        &scenario("tests/scenarios/too-short-bound.toml"),
        "5",
        "f",
        1,
    );

    // The page sits next to report.json, is self-contained, and shows the kill as a span.
    let html = std::fs::read_to_string(a.join("report.html")).expect("report.html");
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(!html.contains("<script"), "no script");
    assert_eq!(
        html.matches("http").count(),
        html.matches("xmlns=\"http://www.w3.org/2000/svg\"").count(),
        "no address but the SVG namespace"
    );
    assert!(
        !html.contains("src=") && !html.contains("href="),
        "no external resource"
    );
    assert!(html.contains("<span class=\"pass\">passed</span>"));
    assert_eq!(html.matches("<svg ").count(), 2, "convergence, invariants");
    assert!(html.contains("<g class=\"span\" data-name=\"kill\">"));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(a.join("report.json")).expect("json"))
            .expect("parse");
    assert_eq!(report["format"], 1);
    assert_eq!(report["faults"][0]["kind"], "kill");
    let lanes = report["invariants"].as_array().expect("verdicts").len();
    assert_eq!(html.matches("<g class=\"lane held\"").count(), lanes);
    let failed_html = std::fs::read_to_string(failing.join("report.html")).expect("page");
    assert!(failed_html.contains("<g class=\"lane violated\" data-name=\"agreement\">"));
    assert!(failed_html.contains("FAILED"));

    // The same run twice: equal hashes, every count with ratio 1.00.
    let o = sim(
        &[
            "compare",
            a.to_str().expect("utf8"),
            a2.to_str().expect("utf8"),
        ],
        cwd,
    );
    let stdout = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{stdout}{}", text(&o.stderr));
    assert!(
        table_row(&stdout, "trace hash").last().map(String::as_str) == Some("equal"),
        "{stdout}"
    );
    for figure in [
        "datagrams delivered",
        "bytes delivered",
        "convergence 100 % (s)",
    ] {
        let row = table_row(&stdout, figure);
        assert_eq!(row[0], row[1], "{figure}: {stdout}");
        assert_eq!(
            row.last().map(String::as_str),
            Some("1.00"),
            "{figure}: {stdout}"
        );
    }

    // Two seeds: different hashes and datagram counts; JSON for scripts; compare.html.
    let o = sim(
        &[
            "compare",
            a.join("report.json").to_str().expect("utf8"),
            b.to_str().expect("utf8"),
            "--json",
            "--out",
            "cmp",
        ],
        cwd,
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["trace_hash_equal"], false);
    let row = v["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["figure"] == "datagrams delivered")
        .expect("row");
    assert_ne!(row["a"], row["b"], "{row}");
    assert_ne!(row["ratio"], 1.0);
    let page = std::fs::read_to_string(cwd.join("cmp/compare.html")).expect("compare.html");
    assert_eq!(
        page.matches("class=\"series\"").count(),
        2,
        "A and B curves on one plot"
    );
    assert!(page.contains("seed 7") && page.contains("seed 8"));

    // A failing run on either side: exit 1, its outcome in the table.
    let o = sim(
        &[
            "compare",
            a.to_str().expect("utf8"),
            failing.to_str().expect("utf8"),
        ],
        cwd,
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    let stdout = text(&o.stdout);
    let agreement = table_row(&stdout, "  agreement");
    assert_eq!(agreement[0], "ok", "{stdout}");
    assert_eq!(agreement[1], "FAIL", "{stdout}");
}

#[test]
fn compare_refuses_unreadable_input_with_exit_2() {
    let dir = tempfile::tempdir().expect("tmp");
    let cwd = dir.path();
    std::fs::write(cwd.join("garbage.json"), "{ not json").expect("write");
    std::fs::write(
        cwd.join("old.json"),
        "{\"scenario\": \"x\", \"seed\": 1, \"ok\": true}",
    )
    .expect("write");
    std::fs::write(cwd.join("future.json"), "{\"format\": 2}").expect("write");
    std::fs::create_dir(cwd.join("empty")).expect("mkdir");
    let cases = [
        ("garbage.json", "garbage.json: not JSON"),
        (
            "old.json",
            "old.json: not a nexus sim report of format 1 (no `format` field",
        ),
        (
            "future.json",
            "future.json: report format 2, this nexus reads format 1",
        ),
        ("empty", "empty/report.json: cannot read"),
        ("missing", "missing: cannot read"),
    ];
    for (input, message) in cases {
        let o = sim(&["compare", input, "future.json"], cwd);
        let stderr = text(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{input}: {stderr}");
        assert!(stderr.contains(message), "{input}: {stderr}");
        assert!(o.stdout.is_empty(), "nothing printed as a result");
    }
}

#[test]
fn no_progress_bar_when_stderr_is_not_a_terminal() {
    let dir = tempfile::tempdir().expect("tmp");
    // No --no-progress: stderr is a pipe here, so the bar stays hidden on its own.
    let o = sim(
        &["run", &scenario("scenarios/steady-mesh.toml"), "--out", "o"],
        dir.path(),
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let stderr = text(&o.stderr);
    assert!(
        !stderr.contains('\r') && !stderr.contains('\u{1b}') && !stderr.contains("virtual"),
        "no progress output on a pipe: {stderr:?}"
    );
    assert!(text(&o.stdout).contains("page: o/report.html"));
    assert!(dir.path().join("o/report.html").exists());
    // --no-html leaves the page out.
    let o = sim(
        &[
            "run",
            &scenario("scenarios/steady-mesh.toml"),
            "--out",
            "p",
            "--no-progress",
            "--no-html",
        ],
        dir.path(),
    );
    assert!(o.status.success());
    assert!(dir.path().join("p/report.json").exists());
    assert!(!dir.path().join("p/report.html").exists());
}
