//! `nexus ctl keyring`: the gossip keyring of the whole fabric (`/v1/keyring*`, scope
//! `operator`). Every command reaches every member through the node it talks to; it exits with
//! an error when a member refused or did not answer.

use std::time::Duration;

use anyhow::bail;
use clap::Subcommand;

use super::{Client, Table, print_json, usage};
use crate::admin::keyring::{KEYRING_TIMEOUT_MS_DEFAULT, KeyringAnswer};

/// `nexus ctl keyring` subcommands.
#[derive(Subcommand, Debug, Clone)]
pub enum KeyringCommand {
    /// List every key the members hold, with how many hold it and how many seal with it.
    List {
        /// How long to wait for the members' answers, ms.
        #[arg(long, default_value_t = KEYRING_TIMEOUT_MS_DEFAULT)]
        timeout_ms: u64,
    },
    /// Install a key on every member (it opens datagrams at once; `use` makes it seal).
    Install {
        /// The key, base64 of 32 bytes (`nexus keygen`).
        key: String,
        /// How long to wait for the members' answers, ms.
        #[arg(long, default_value_t = KEYRING_TIMEOUT_MS_DEFAULT)]
        timeout_ms: u64,
    },
    /// Make an installed key every member's primary key (the one that seals).
    Use {
        /// The key, base64.
        key: String,
        /// How long to wait for the members' answers, ms.
        #[arg(long, default_value_t = KEYRING_TIMEOUT_MS_DEFAULT)]
        timeout_ms: u64,
    },
    /// Remove a key from every member (a member whose primary key it is refuses).
    Remove {
        /// The key, base64.
        key: String,
        /// How long to wait for the members' answers, ms.
        #[arg(long, default_value_t = KEYRING_TIMEOUT_MS_DEFAULT)]
        timeout_ms: u64,
    },
}

/// The answer as people read it.
pub fn render(a: &KeyringAnswer) -> String {
    let mut out = format!(
        "{}: {} of {} members answered\n",
        a.op, a.responded, a.members
    );
    let rows: Vec<Vec<String>> = a
        .keys
        .iter()
        .map(|k| {
            vec![
                k.key.clone(),
                format!("{}/{}", k.members, a.members),
                k.primary.to_string(),
            ]
        })
        .collect();
    let mut t = Table::new(&["KEY", "MEMBERS", "PRIMARY"]);
    t.extend(rows);
    out.push_str(&t.to_string());
    for r in &a.refused {
        out.push_str(&format!(
            "refused by {} ({}): {}\n",
            r.name, r.addr, r.error
        ));
    }
    for m in &a.no_answer {
        out.push_str(&format!("no answer from {} ({})\n", m.name, m.addr));
    }
    out
}

/// Runs one `nexus ctl keyring` command.
pub async fn keyring(client: &Client, command: KeyringCommand, json: bool) -> anyhow::Result<()> {
    let (path, key, timeout_ms) = match command {
        KeyringCommand::List { timeout_ms } => ("list", None, timeout_ms),
        KeyringCommand::Install { key, timeout_ms } => ("install", Some(key), timeout_ms),
        KeyringCommand::Use { key, timeout_ms } => ("use", Some(key), timeout_ms),
        KeyringCommand::Remove { key, timeout_ms } => ("remove", Some(key), timeout_ms),
    };
    if let Some(key) = &key
        && let Err(e) = nexus_gossip::SecretKey::parse(key)
    {
        return Err(usage(anyhow::anyhow!("{e}")));
    }
    // The node answers after the members did (or the deadline passed): wait longer than that.
    let client = Client {
        http: client
            .http_client(Duration::from_millis(timeout_ms) + Duration::from_secs(5))
            .map_err(usage)?,
        ..client.clone()
    };
    let (answer, raw): (KeyringAnswer, _) = match key {
        None => {
            client
                .get(&format!("/v1/keyring?timeout_ms={timeout_ms}"))
                .await?
        }
        Some(key) => {
            let body = serde_json::json!({ "key": key, "timeout_ms": timeout_ms });
            client.post(&format!("/v1/keyring/{path}"), &body).await?
        }
    };
    if json {
        print_json(&raw);
    } else {
        out!("{}", render(&answer));
    }
    if !answer.complete {
        bail!(
            "{}: {} member(s) refused, {} did not answer",
            answer.op,
            answer.refused.len(),
            answer.no_answer.len()
        );
    }
    Ok(())
}
