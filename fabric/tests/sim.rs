//! `nexus sim` as a user runs it: determinism across processes, a failing scenario reported with
//! its reproduce command, bad scenarios rejected with exit 2, report files written, swarm.

#![allow(
    clippy::disallowed_methods,
    reason = "the shared harness measures wall-clock deadlines of real processes"
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::nexus;

fn scenario(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../sim")
        .join(rel)
}

fn sim(args: &[&str], out: &Path) -> Output {
    nexus()
        .arg("sim")
        .args(args)
        .arg("--no-progress")
        .env("NO_COLOR", "1")
        .current_dir(out)
        .output()
        .expect("run nexus sim")
}

fn trace_hash(o: &Output) -> String {
    let stdout = String::from_utf8_lossy(&o.stdout);
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("trace hash: "))
        .unwrap_or_else(|| panic!("no trace hash in:\n{stdout}"))
        .to_owned()
}

#[test]
fn same_seed_same_hash_across_processes() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = scenario("scenarios/crash-restart.toml");
    let p = path.to_str().expect("utf8");
    let a = sim(&["run", p, "--seed", "7"], dir.path());
    let b = sim(&["run", p, "--seed", "7"], dir.path());
    let c = sim(&["run", p, "--seed", "8"], dir.path());
    for o in [&a, &b, &c] {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    assert_eq!(
        trace_hash(&a),
        trace_hash(&b),
        "same seed, separate processes"
    );
    assert_ne!(trace_hash(&a), trace_hash(&c), "different seed");
    // The report and the plot are written next to each other.
    let out = dir.path().join("sim-out/crash-restart-seed7");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).expect("report"))
            .expect("json");
    assert_eq!(report["ok"], true);
    assert_eq!(report["trace_hash"], trace_hash(&a));
    let svg = std::fs::read_to_string(out.join("convergence.svg")).expect("svg");
    assert!(
        svg.starts_with("<svg") && svg.contains("polyline"),
        "an SVG with a curve"
    );
}

#[test]
fn a_violation_prints_seed_time_event_and_reproduce_command() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = scenario("tests/scenarios/too-short-bound.toml");
    let p = path.to_str().expect("utf8");
    let trace = dir.path().join("t.jsonl");
    let o = sim(
        &[
            "run",
            p,
            "--seed",
            "5",
            "--trace",
            trace.to_str().expect("utf8"),
        ],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(1), "an invariant failure exits 1");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("invariant agreement violated at"),
        "{stderr}"
    );
    assert!(stderr.contains("(seed 5)"), "{stderr}");
    assert!(
        stderr.contains("s virtual"),
        "names the virtual time: {stderr}"
    );
    assert!(
        stderr.contains(&format!("reproduce: nexus sim run {p} --seed 5")),
        "{stderr}"
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("agreement    FAIL"), "{stdout}");
    let lines = std::fs::read_to_string(&trace).expect("trace");
    assert!(lines.lines().any(|l| l.contains("\"kind\":\"violation\"")));
    assert!(lines.lines().any(|l| l.contains("\"kind\":\"action\"")));
}

#[test]
fn json_output_and_swarm() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = scenario("scenarios/wan-stall.toml");
    let p = path.to_str().expect("utf8");
    let o = sim(&["run", p, "--json", "--out", "r"], dir.path());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let json_end = stdout.rfind("trace hash:").expect("hash line");
    let v: serde_json::Value = serde_json::from_str(&stdout[..json_end]).expect("json report");
    assert_eq!(v["nodes"], 24);
    assert_eq!(v["invariants"].as_array().map(Vec::len), Some(4));
    assert!(dir.path().join("r/report.json").exists());

    let o = sim(&["swarm", p, "--seeds", "1..4", "--jobs", "2"], dir.path());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    assert!(String::from_utf8_lossy(&o.stdout).contains("wan-stall: 4 seeds, 0 failed"));

    let bad = scenario("tests/scenarios/too-short-bound.toml");
    let o = sim(
        &[
            "swarm",
            bad.to_str().expect("utf8"),
            "--seeds",
            "1..3",
            "--json",
        ],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["failures"].as_array().map(Vec::len), Some(3));
}

#[test]
fn bad_scenarios_exit_2_naming_the_field() {
    let dir = tempfile::tempdir().expect("tmp");
    let cases = [
        ("name = \"x\"\nnodes = 0\nduration = \"1s\"\n", "nodes"),
        (
            "name = \"x\"\nnodes = 3\nduration = \"1s\"\nlatency = 5\n",
            "latency",
        ),
        (
            "name = \"x\"\nnodes = 3\nduration = \"30s\"\n[[timeline]]\nat = \"1s\"\naction = \"kill\"\nnodes = [\"n4\"]\n",
            "timeline[0].nodes",
        ),
    ];
    for (text, field) in cases {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, text).expect("write");
        let o = sim(&["run", path.to_str().expect("utf8")], dir.path());
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(&format!(": {field}:")), "{field}: {stderr}");
    }
    let o = sim(&["run", "/nonexistent.toml"], dir.path());
    assert_eq!(o.status.code(), Some(2));
    let o = sim(
        &[
            "swarm",
            scenario("scenarios/wan-stall.toml").to_str().expect("utf8"),
            "--seeds",
            "9..1",
        ],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(2));
}
