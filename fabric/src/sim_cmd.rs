//! `nexus sim run|swarm|compare`: the command line of the simulator (`nexus-sim`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use nexus_sim::swarm::{parse_seeds, swarm};
use nexus_sim::trace::Trace;
use nexus_sim::{RunReport, Scenario};

/// `nexus sim` subcommands.
#[derive(Subcommand, Debug, Clone)]
pub enum SimCommand {
    /// Run one scenario with one seed; prints `trace hash: <hex>`.
    Run(RunArgs),
    /// Run one scenario over many seeds and list the failing ones.
    Swarm(SwarmArgs),
    /// Compare two runs (their output directories or report.json files): key figures side by
    /// side with differences and ratios, invariant outcomes, trace hashes.
    Compare(CompareArgs),
}

/// `nexus sim compare` arguments.
#[derive(Args, Debug, Clone)]
pub struct CompareArgs {
    /// Run A: an output directory of `nexus sim run` or its report.json.
    pub a: PathBuf,
    /// Run B: likewise.
    pub b: PathBuf,
    /// Print the comparison as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Write compare.html (both convergence curves on one plot, the table) into this directory.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// `nexus sim run` flags.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Scenario file (see docs/simulator.md).
    pub scenario: PathBuf,
    /// Seed [default: the scenario's `seed`, else 1].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Write every trace event as JSON lines to this file.
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Directory for report.json, convergence.svg and report.html
    /// [default: sim-out/<scenario>-seed<seed>].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Do not show a progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// Do not write report.html.
    #[arg(long)]
    pub no_html: bool,
}

/// `nexus sim swarm` flags.
#[derive(Args, Debug, Clone)]
pub struct SwarmArgs {
    /// Scenario file.
    pub scenario: PathBuf,
    /// Seeds, `A..B` inclusive (or one seed).
    #[arg(long, default_value = "1..100")]
    pub seeds: String,
    /// Worker threads.
    #[arg(long, default_value_t = 2)]
    pub jobs: usize,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    /// Do not show a progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

/// How a sim command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimExit {
    /// Every invariant held.
    Passed,
    /// An invariant failed (exit 1).
    Failed,
    /// The input is invalid: a scenario file, seeds, or a report to compare (exit 2).
    BadScenario,
}

fn load(path: &Path) -> Result<Scenario, SimExit> {
    Scenario::load(path).map_err(|e| {
        eprintln!("error: {}: {e}", path.display());
        SimExit::BadScenario
    })
}

fn bar(total: u64, enabled: bool, template: &str) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if !enabled || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        pb.set_style(style);
    }
    pb
}

/// Runs `nexus sim run`.
pub fn run(args: RunArgs) -> anyhow::Result<SimExit> {
    let scenario = match load(&args.scenario) {
        Ok(s) => s,
        Err(exit) => return Ok(exit),
    };
    let seed = args.seed.unwrap_or(scenario.seed);
    let trace = match &args.trace {
        Some(path) => Trace::to_file(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        ),
        None => Trace::new(),
    };
    // A NexStream run goes on for its settle period after `duration`.
    let settle = scenario
        .stream
        .as_ref()
        .map_or(Duration::ZERO, |s| s.settle);
    let total_ms = u64::try_from((scenario.duration + settle).as_millis()).unwrap_or(u64::MAX);
    let pb = bar(
        total_ms,
        !args.no_progress,
        "{spinner} virtual {pos}/{len} ms [{bar:30}] {elapsed} wall",
    );
    let mut tick = |now: Duration, _total: Duration| {
        pb.set_position(u64::try_from(now.as_millis()).unwrap_or(u64::MAX));
    };
    let report = match nexus_sim::run(&scenario, seed, trace, Some(&mut tick)) {
        Ok(r) => r,
        Err(e) => {
            pb.finish_and_clear();
            eprintln!("error: {}: {e}", args.scenario.display());
            return Ok(SimExit::BadScenario);
        }
    };
    pb.finish_and_clear();
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("sim-out/{}-seed{seed}", scenario.name)));
    write_outputs(&report, &out, !args.no_html)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
        println!(
            "report: {d}/report.json, plot: {d}/convergence.svg{}",
            if args.no_html {
                String::new()
            } else {
                format!(", page: {}/report.html", out.display())
            },
            d = out.display(),
        );
    }
    if let Some(e) = &report.trace_error {
        eprintln!("warning: writing the trace failed: {e}");
    }
    println!("trace hash: {}", report.trace_hash);
    if let Some(v) = report.first_failure() {
        eprintln!(
            "invariant {} violated at {} (seed {seed}): {}",
            v.invariant,
            v.violated_at_s
                .map(|s| format!("{s:.3}s virtual"))
                .unwrap_or_else(|| "the end of the run".into()),
            v.detail
        );
        eprintln!(
            "reproduce: nexus sim run {} --seed {seed} --trace trace.jsonl",
            args.scenario.display()
        );
        return Ok(SimExit::Failed);
    }
    Ok(SimExit::Passed)
}

fn write_outputs(report: &RunReport, dir: &Path, html: bool) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(
        dir.join("report.json"),
        serde_json::to_string_pretty(report)?,
    )
    .with_context(|| format!("writing {}/report.json", dir.display()))?;
    report
        .write_svg(&dir.join("convergence.svg"))
        .map_err(|e| anyhow::anyhow!("writing {}/convergence.svg: {e}", dir.display()))?;
    if html {
        report
            .write_html(&dir.join("report.html"))
            .map_err(|e| anyhow::anyhow!("writing {}/report.html: {e}", dir.display()))?;
    }
    Ok(())
}

/// Runs `nexus sim compare`: exit 0 when both runs passed, 1 when either failed an invariant,
/// 2 when a report cannot be read.
pub fn compare_cmd(args: CompareArgs) -> anyhow::Result<SimExit> {
    use nexus_sim::compare;
    let (a_path, a) = match compare::load(&args.a) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(SimExit::BadScenario);
        }
    };
    let (b_path, b) = match compare::load(&args.b) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(SimExit::BadScenario);
        }
    };
    let c = compare::compare(&a_path, &a, &b_path, &b);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&c)?);
    } else {
        print!("{}", c.table());
    }
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join("compare.html");
        std::fs::write(&path, nexus_sim::html::compare_report(&c, &a, &b))
            .with_context(|| format!("writing {}", path.display()))?;
        if !args.json {
            println!("page: {}", path.display());
        }
    }
    Ok(if c.both_passed {
        SimExit::Passed
    } else {
        SimExit::Failed
    })
}

/// Runs `nexus sim swarm`.
pub fn swarm_cmd(args: SwarmArgs) -> anyhow::Result<SimExit> {
    let scenario = match load(&args.scenario) {
        Ok(s) => s,
        Err(exit) => return Ok(exit),
    };
    let seeds = match parse_seeds(&args.seeds) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: --seeds: {e}");
            return Ok(SimExit::BadScenario);
        }
    };
    let pb = bar(
        seeds.end() - seeds.start() + 1,
        !args.no_progress,
        "{spinner} seeds {pos}/{len} [{bar:30}] {elapsed}",
    );
    let report = swarm(&scenario, seeds, args.jobs, &|| pb.inc(1));
    pb.finish_and_clear();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{}: {} seeds, {} failed, {:.1}s wall",
            report.scenario,
            report.runs,
            report.failures.len(),
            report.wall_s
        );
        for f in &report.failures {
            println!("  seed {}: {} — {}", f.seed, f.invariant, f.detail);
            println!(
                "    reproduce: nexus sim run {} --seed {}",
                args.scenario.display(),
                f.seed
            );
        }
    }
    Ok(if report.failures.is_empty() {
        SimExit::Passed
    } else {
        SimExit::Failed
    })
}
