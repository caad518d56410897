//! `nexus`: run a node, administer it, or start a local demo fabric.

use clap::Parser;
use nexus_fabric::cli::{Cli, Command, NodeCommand};
use nexus_fabric::config::NodeConfig;
use nexus_fabric::node::{ExitCode, StartError};
use nexus_fabric::sim_cmd::{self, SimCommand, SimExit};
use nexus_fabric::{cli, ctl, demo, logging, node};

fn fail_config(message: impl std::fmt::Display) -> std::process::ExitCode {
    eprintln!("error: {message}");
    std::process::ExitCode::from(ExitCode::Config as u8)
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Documents clap derives need no runtime.
    match &cli.command {
        Command::Completions(args) => {
            cli::completions(args.shell, &mut std::io::stdout());
            return std::process::ExitCode::SUCCESS;
        }
        Command::Man(args) => {
            return match cli::man(args.out.as_deref(), &mut std::io::stdout()) {
                Ok(written) => {
                    for path in written {
                        println!("wrote {}", path.display());
                    }
                    std::process::ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    std::process::ExitCode::FAILURE
                }
            };
        }
        _ => {}
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Node(NodeCommand::Check(args)) => match NodeConfig::load(&args) {
            Ok(config) => {
                println!("configuration ok: {config:#?}");
                std::process::ExitCode::SUCCESS
            }
            Err(e) => fail_config(e),
        },
        Command::Node(NodeCommand::Run(args)) => {
            let config = match NodeConfig::load(&args) {
                Ok(c) => c,
                Err(e) => return fail_config(e),
            };
            let telemetry = match logging::init(
                args.log_level.as_deref(),
                config.log_level.as_deref(),
                config.log_format,
                config.telemetry.as_ref().map(|t| (t, config.name.as_str())),
            ) {
                Ok(t) => t,
                Err(e) => return fail_config(e),
            };
            let code = match runtime.block_on(node::run(config)) {
                Ok(code) => std::process::ExitCode::from(code as u8),
                Err(StartError::Config(e)) => fail_config(e),
                Err(StartError::Runtime(e)) => {
                    eprintln!("error: {e}");
                    std::process::ExitCode::from(ExitCode::Failed as u8)
                }
            };
            // Spans still queued are sent before the process exits.
            if let Some(t) = telemetry {
                t.shutdown();
            }
            code
        }
        Command::Ctl(args) => match runtime.block_on(ctl::run(args)) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                std::process::ExitCode::from(ctl::error::exit_code(&e) as u8)
            }
        },
        Command::Completions(_) | Command::Man(_) => unreachable!("handled before the runtime"),
        Command::Sim(cmd) => {
            let result = match cmd {
                SimCommand::Run(args) => sim_cmd::run(args),
                SimCommand::Swarm(args) => sim_cmd::swarm_cmd(args),
                SimCommand::Compare(args) => sim_cmd::compare_cmd(args),
            };
            match result {
                Ok(SimExit::Passed) => std::process::ExitCode::SUCCESS,
                Ok(SimExit::Failed) => std::process::ExitCode::FAILURE,
                Ok(SimExit::BadScenario) => std::process::ExitCode::from(ExitCode::Config as u8),
                Err(e) => {
                    eprintln!("error: {e:#}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
        Command::Keygen => {
            use rand_core_06::RngCore;
            let mut key = [0u8; nexus_gossip::KEY_BYTES];
            rand_core_06::OsRng.fill_bytes(&mut key);
            println!("{}", nexus_gossip::SecretKey::from_bytes(key).to_base64());
            std::process::ExitCode::SUCCESS
        }
        Command::Demo(args) => match runtime.block_on(demo::run(args)) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                std::process::ExitCode::FAILURE
            }
        },
    }
}
