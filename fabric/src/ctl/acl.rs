//! `nexus ctl acl`: ACL tokens (`/v1/acl/tokens`, scope `management`).

use clap::Subcommand;

use super::output::{now_ms, time_ms};
use super::{Client, Table, print_json};
use crate::api::{TokenCreated, TokenList, TokenRevoked};

/// `nexus ctl acl` subcommands.
#[derive(Subcommand, Debug, Clone)]
pub enum AclCommand {
    /// Create, list and revoke tokens.
    #[command(subcommand)]
    Token(TokenCommand),
}

/// `nexus ctl acl token` subcommands.
#[derive(Subcommand, Debug, Clone)]
pub enum TokenCommand {
    /// Create a token; prints its secret, which is shown this once.
    Create {
        /// A scope the token holds (repeatable or comma-separated): read, services:write,
        /// routes:write, ca:issue, ca:revoke, ca:admin, operator, management.
        #[arg(
            long = "scope",
            value_name = "SCOPE",
            value_delimiter = ',',
            required = true
        )]
        scopes: Vec<String>,
        /// What the token is for.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List tokens (accessor ids, scopes; never secrets).
    List,
    /// Revoke a token by its accessor id: its secret is refused from now on.
    Revoke {
        /// The token's accessor id.
        accessor: String,
    },
}

/// Runs one `nexus ctl acl` command.
pub async fn acl(client: &Client, command: AclCommand, json: bool) -> anyhow::Result<()> {
    let AclCommand::Token(command) = command;
    match command {
        TokenCommand::Create {
            scopes,
            description,
        } => {
            let body = serde_json::json!({ "description": description, "scopes": scopes });
            let (t, raw): (TokenCreated, _) = client.post("/v1/acl/tokens", &body).await?;
            if json {
                print_json(&raw);
            } else {
                let t = Table::fields(vec![
                    ("accessor", t.token.accessor),
                    ("secret", t.secret),
                    ("scopes", t.token.scopes.join(",")),
                ]);
                out!("{t}");
                outln!("The secret is shown only now; the node keeps only its SHA-256.");
            }
        }
        TokenCommand::List => {
            let (list, raw): (TokenList, _) = client.get("/v1/acl/tokens").await?;
            if json {
                print_json(&raw);
            } else {
                let now = now_ms();
                let rows: Vec<Vec<String>> = list
                    .tokens
                    .iter()
                    .map(|t| {
                        vec![
                            t.accessor.clone(),
                            t.kind.clone(),
                            t.scopes.join(","),
                            // 0: the bootstrap token, which has no creation time.
                            match t.created_unix_s {
                                0 => "-".to_owned(),
                                s => time_ms(s.saturating_mul(1000), now),
                            },
                            if t.description.is_empty() {
                                "-".into()
                            } else {
                                t.description.clone()
                            },
                        ]
                    })
                    .collect();
                let mut t = Table::new(&["ACCESSOR", "KIND", "SCOPES", "CREATED", "DESCRIPTION"]);
                t.extend(rows);
                out!("{t}");
            }
        }
        TokenCommand::Revoke { accessor } => {
            let (r, raw): (TokenRevoked, _) =
                client.delete(&format!("/v1/acl/tokens/{accessor}")).await?;
            if json {
                print_json(&raw);
            } else {
                outln!("{} {}", r.accessor, r.status);
            }
        }
    }
    Ok(())
}
