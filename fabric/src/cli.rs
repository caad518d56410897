//! The `nexus` command line: its clap definition (shared by the binary, `nexus completions` and
//! `nexus man`), shell completion scripts and man pages.
//!
//! The binary (`src/main.rs`) parses [`Cli`] and dispatches; this module only describes the
//! commands and renders the documents clap can derive from them.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, CommandFactory as _, Parser, Subcommand};

use crate::config::NodeRunArgs;
use crate::sim_cmd::SimCommand;
use crate::{ctl, demo};

/// The exit codes of every `nexus` command, shown by `nexus --help` and in `nexus(1)`.
pub const EXIT_CODES: &str = "\
Exit codes:
  nexus node run    0 left on request (signal or POST /v1/leave)
                    1 stopped by an escalated failure or a runtime
                      error
                    2 bad configuration (nothing was started)
  nexus node check  0 the configuration is valid; 2 it is not
  nexus ctl         0 success
                    1 the node answered with an error, or the
                      outcome is a failure
                    2 usage or local input error
                    3 the node cannot be reached
                    4 the node refused the credentials (401/403)
  nexus sim         0 every invariant held
                    1 an invariant failed (or the run failed)
                    2 the scenario is invalid
  nexus demo        0 stopped with Ctrl-C; 1 a step failed
  other commands    0 success; 1 failure
A bad flag or argument exits 2 for every command.";

/// `nexus`: run a node, administer it, or start a local demo fabric.
#[derive(Parser, Debug)]
#[command(
    name = "nexus",
    version,
    about = "Nexus: an AI-native routing fabric",
    long_about = None,
    after_long_help = EXIT_CODES
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// `nexus` subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run and check nodes.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Administer a running node through its admin API.
    Ctl(ctl::CtlArgs),
    /// Start a live local fabric (3 nodes on loopback) and serve until Ctrl-C.
    Demo(demo::DemoArgs),
    /// Rehearse a fabric in the deterministic simulator.
    #[command(subcommand)]
    Sim(SimCommand),
    /// Print a fresh gossip encryption key (base64 of 32 random bytes from the OS), for
    /// `[gossip] encrypt_key` or `nexus ctl keyring install`.
    Keygen,
    /// Print a shell completion script (bash, zsh, fish, elvish or powershell) to stdout.
    Completions(CompletionsArgs),
    /// Write man pages, one per command (`nexus.1`, `nexus-ctl.1`, `nexus-ctl-members.1`, …),
    /// into `--out`, or print `nexus(1)` to stdout.
    Man(ManArgs),
}

/// `nexus node` subcommands.
#[derive(Subcommand, Debug)]
pub enum NodeCommand {
    /// Run a node in the foreground.
    Run(NodeRunArgs),
    /// Parse and check a configuration without starting anything.
    Check(NodeRunArgs),
}

/// `nexus completions` flags.
#[derive(Args, Debug, Clone)]
#[command(after_long_help = "\
Install, for example:
  bash  nexus completions bash > ~/.local/share/bash-completion/completions/nexus
  zsh   nexus completions zsh > \"${fpath[1]}/_nexus\"
  fish  nexus completions fish > ~/.config/fish/completions/nexus.fish")]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `nexus man` flags.
#[derive(Args, Debug, Clone)]
pub struct ManArgs {
    /// Directory to write every page into (created if missing); without it, `nexus(1)` goes to
    /// stdout.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// The clap command tree of `nexus`, with global flags propagated to every subcommand.
pub fn command() -> clap::Command {
    let mut cmd = Cli::command();
    cmd.build();
    cmd
}

/// Writes the completion script for `shell` to `out`.
pub fn completions(shell: clap_complete::Shell, out: &mut dyn Write) {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "nexus", out);
}

/// One man page per command and subcommand: the file name (`nexus-ctl-members.1`) and the
/// roff text. Auto-generated `help` subcommands get no page.
pub fn man_pages() -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut pages = Vec::new();
    collect_pages(&command(), &mut pages)?;
    Ok(pages)
}

fn collect_pages(cmd: &clap::Command, pages: &mut Vec<(String, Vec<u8>)>) -> anyhow::Result<()> {
    // `command()` built the tree: each subcommand's display name is its page name
    // (`nexus-ctl-members`) and its bin name the words one types (`nexus ctl members`).
    let mut page_cmd = cmd.clone();
    let name = page_cmd
        .get_display_name()
        .unwrap_or_else(|| page_cmd.get_name())
        .to_owned();
    // Every `nexus ctl …` page carries the ctl exit codes.
    if name.starts_with("nexus-ctl-") && page_cmd.get_after_long_help().is_none() {
        page_cmd = page_cmd.after_long_help(ctl::CTL_EXIT_CODES);
    }
    let man = clap_mangen::Man::new(page_cmd);
    let mut roff = Vec::new();
    man.render(&mut roff)
        .with_context(|| format!("rendering the man page of {name}"))?;
    pages.push((man.get_filename(), roff));
    for sub in cmd.get_subcommands() {
        if sub.get_name() == "help" || sub.is_hide_set() {
            continue;
        }
        collect_pages(sub, pages)?;
    }
    Ok(())
}

/// `nexus man`: every page into `dir`, or `nexus(1)` to `stdout`. Returns the files written.
pub fn man(dir: Option<&Path>, stdout: &mut dyn Write) -> anyhow::Result<Vec<PathBuf>> {
    let pages = man_pages()?;
    let Some(dir) = dir else {
        let (_, root) = pages.first().context("no man page rendered")?;
        stdout.write_all(root).context("writing to stdout")?;
        return Ok(Vec::new());
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut written = Vec::with_capacity(pages.len());
    for (file, roff) in pages {
        let path = dir.join(file);
        std::fs::write(&path, roff).with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn one_page_per_command_each_a_man_page() {
        let pages = man_pages().expect("pages");
        let names: Vec<&str> = pages.iter().map(|(n, _)| n.as_str()).collect();
        for want in [
            "nexus.1",
            "nexus-node-run.1",
            "nexus-ctl.1",
            "nexus-ctl-members.1",
            "nexus-ctl-ca-voters-add.1",
            "nexus-ctl-acl-token-create.1",
            "nexus-sim-run.1",
            "nexus-completions.1",
            "nexus-man.1",
        ] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
        assert!(!names.iter().any(|n| n.contains("help")), "{names:?}");
        for (name, roff) in &pages {
            let text = String::from_utf8_lossy(roff);
            assert!(text.starts_with(".ie") || text.contains(".TH"), "{name}");
            assert!(text.contains(".TH"), "{name}: {text}");
        }
        let ctl =
            String::from_utf8_lossy(&pages.iter().find(|p| p.0 == "nexus-ctl.1").expect("ctl").1)
                .into_owned();
        assert!(ctl.contains("Exit codes"), "{ctl}");
    }
}
