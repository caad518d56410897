//! Simulator scale: virtual seconds per wall second, time to membership agreement (virtual and
//! wall) and peak memory for a steady mesh of N nodes joining through one seed (40 s virtual,
//! defaults otherwise), each size in a child process so its peak RSS is its own. Sizes too large
//! for the machine's memory report the capacity check's refusal.
//!
//! Run: `cargo bench -p nexus-sim --bench scale` (`NEXUS_SIM_BENCH_SIZES=100,1000`,
//! `NEXUS_SIM_BENCH_MODE=core|node`, `NEXUS_SIM_BENCH_VIRTUAL_S=40`). Figures are recorded in docs/BENCHMARKS.md.

use std::process::Command;

use nexus_sim::Scenario;
use nexus_sim::trace::Trace;

/// Virtual seconds each size runs (`NEXUS_SIM_BENCH_VIRTUAL_S`, default 40); the agreement
/// invariant is checked from 5 s before the end.
fn virtual_s() -> u64 {
    std::env::var("NEXUS_SIM_BENCH_VIRTUAL_S")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&v| v > 5)
        .unwrap_or(40)
}

fn scenario(mode: &str, nodes: usize) -> Scenario {
    let (duration, converge) = (virtual_s(), virtual_s() - 5);
    let text = format!(
        "name = \"scale-{nodes}\"\nmode = \"{mode}\"\nnodes = {nodes}\nduration = \"{duration}s\"\n\
         sample_every = \"5s\"\n[topology]\nkind = \"mesh\"\nlatency = \"1ms\"\n\
         [invariants]\nconverge_within = \"{converge}s\"\n"
    );
    Scenario::parse(&text).expect("valid scenario")
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn child(mode: &str, nodes: usize) {
    let s = scenario(mode, nodes);
    match nexus_sim::run(&s, 1, Trace::new(), None) {
        Ok(r) => {
            eprint!("{}", r.table());
            if let Some(a) = &r.agreement {
                eprintln!("agreement full checks: {}", a.full_checks);
            }
            let first = r.agreement.as_ref().and_then(|a| a.first);
            let at = |f: fn(&nexus_sim::report::Moment) -> f64| {
                first.map_or_else(|| "never".to_owned(), |m| format!("{:.1}", f(&m)))
            };
            println!(
                "RESULT {nodes} {:.2} {:.1} {} {} {} {} {}",
                r.speed,
                r.wall_s,
                peak_rss_kib(),
                r.messages,
                if r.ok { "ok" } else { "FAIL" },
                at(|m| m.virtual_s),
                at(|m| m.wall_s),
            )
        }
        Err(e) => println!("REFUSED {nodes} {e}"),
    }
}

fn main() {
    if let Ok(spec) = std::env::var("NEXUS_SIM_BENCH_CHILD") {
        let (mode, n) = spec.split_once(':').expect("mode:nodes");
        child(mode, n.parse().expect("nodes"));
        return;
    }
    if !std::env::args().any(|a| a == "--bench") {
        println!("scale bench: run with `cargo bench -p nexus-sim --bench scale`");
        return;
    }
    let mode = std::env::var("NEXUS_SIM_BENCH_MODE").unwrap_or_else(|_| "core".into());
    let sizes: Vec<usize> = std::env::var("NEXUS_SIM_BENCH_SIZES")
        .unwrap_or_else(|_| "100,1000,10000,100000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let exe = std::env::current_exe().expect("exe");
    println!(
        "{mode} mode, steady mesh, {} s virtual, seed 1",
        virtual_s()
    );
    println!(
        "{:>7}  {:>16}  {:>9}  {:>15}  {:>12}  {:>13}  {:>11}  invariants",
        "nodes",
        "virtual s/wall s",
        "wall s",
        "agreed virtual s",
        "agreed wall s",
        "peak RSS MiB",
        "messages"
    );
    for n in sizes {
        let out = Command::new(&exe)
            .env("NEXUS_SIM_BENCH_CHILD", format!("{mode}:{n}"))
            .output()
            .expect("child");
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find(|l| l.starts_with("RESULT") || l.starts_with("REFUSED"));
        match line.map(|l| l.split_whitespace().collect::<Vec<_>>()) {
            Some(f) if f[0] == "RESULT" && f.len() == 9 => println!(
                "{:>7}  {:>16}  {:>9}  {:>15}  {:>12}  {:>13.0}  {:>11}  {}",
                f[1],
                f[2],
                f[3],
                f[7],
                f[8],
                f[4].parse::<f64>().unwrap_or(0.0) / 1024.0,
                f[5],
                f[6]
            ),
            Some(_) => println!(
                "{n:>7}  refused: {}",
                line.unwrap_or_default().splitn(3, ' ').nth(2).unwrap_or("")
            ),
            None => println!(
                "{n:>7}  child failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            ),
        }
    }
}
