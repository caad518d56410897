//! `nexus ctl`: a thin client of the admin API. Tables for people, `--json` for scripts.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde::de::DeserializeOwned;

use crate::api::{Actors, LeaveResponse, Members, Node, Problem};
use crate::config::TOKEN_ENV;

/// `nexus ctl` flags.
#[derive(Args, Debug, Clone)]
pub struct CtlArgs {
    /// Admin API base URL.
    #[arg(
        long,
        env = "NEXUS_ADMIN",
        default_value = "http://127.0.0.1:7700",
        global = true
    )]
    pub admin: String,
    /// Bearer token for the admin API.
    #[arg(long, env = TOKEN_ENV, hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// `nexus ctl` subcommands.
#[derive(Subcommand, Debug, Clone)]
pub enum CtlCommand {
    /// Show this node (id, addresses, incarnation).
    Node,
    /// List the members this node sees.
    Members,
    /// Show the supervision tree with restart counts.
    Actors,
    /// Make the node leave the fabric gracefully (it then exits).
    Leave {
        /// Reason recorded in the node's log.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Send NexLink data frames for a routing key to a node's data plane (`--dataplane`).
    Send(SendArgs),
}

/// `nexus ctl send` flags.
#[derive(Args, Debug, Clone)]
pub struct SendArgs {
    /// The node's data-plane UDP address (`GET /v1/node` shows it as `dataplane`).
    #[arg(long, value_name = "IP:PORT")]
    pub to: std::net::SocketAddr,
    /// Routing key, 32 hex digits.
    #[arg(long)]
    pub key: String,
    /// Frames to send (one flow each: sessions `session`, `session + 1`, …).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub count: u32,
    /// First session id.
    #[arg(long, default_value_t = 1)]
    pub session: u64,
    /// Payload bytes per frame (filled with the sequence number).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(0..=8192))]
    pub payload: u16,
    /// Hop limit of the frames.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u8).range(1..))]
    pub hop_limit: u8,
}

/// Builds one NexLink data frame.
pub fn data_frame(
    key: u128,
    session: u64,
    seq: u32,
    payload: u16,
    hop_limit: u8,
) -> anyhow::Result<Vec<u8>> {
    use nexus_dataplane::wire::nexlink::{
        DeliveryMode, Ecn, Flags, FrameType, HEADER_LEN, HopLimit, NodeTag, Packet, Repr,
        RoutingKey, SeqNumber, SessionId, StreamId, TrafficClass,
    };
    let repr = Repr {
        frame_type: FrameType::Data,
        flags: Flags::EMPTY,
        delivery_mode: DeliveryMode::ALL[0],
        traffic_class: TrafficClass::new(0).ok_or_else(|| anyhow::anyhow!("traffic class"))?,
        ecn: Ecn::NotEct,
        hop_limit: HopLimit::new(hop_limit)
            .ok_or_else(|| anyhow::anyhow!("hop limit must be above 0"))?,
        routing_key: RoutingKey(key),
        src: NodeTag(0),
        dst: NodeTag(0),
        session: SessionId(session),
        stream: StreamId(1),
        seq: SeqNumber(seq),
        payload_len: payload,
        tensor: None,
    };
    let mut buf = vec![0u8; repr.buffer_len()];
    for (i, b) in buf[HEADER_LEN..].iter_mut().enumerate() {
        *b = seq.to_be_bytes()[i % 4];
    }
    repr.emit(&mut Packet::new_unchecked(&mut buf[..]))
        .map_err(|e| anyhow::anyhow!("building the frame: {e}"))?;
    Ok(buf)
}

fn send(args: &SendArgs) -> anyhow::Result<()> {
    let key = nexus_actors::parse_routing_key(&args.key).ok_or_else(|| {
        anyhow::anyhow!("--key {:?} is not a routing key (32 hex digits)", args.key)
    })?;
    let local: std::net::SocketAddr = if args.to.is_ipv6() {
        "[::]:0".parse()?
    } else {
        "0.0.0.0:0".parse()?
    };
    let socket = std::net::UdpSocket::bind(local).context("binding a UDP socket")?;
    for i in 0..args.count {
        let frame = data_frame(
            key.0,
            args.session.wrapping_add(u64::from(i)),
            i,
            args.payload,
            args.hop_limit,
        )?;
        socket
            .send_to(&frame, args.to)
            .with_context(|| format!("sending to {}", args.to))?;
    }
    println!(
        "sent {} frame(s) of {} bytes for key {} to {}",
        args.count,
        64 + usize::from(args.payload),
        nexus_actors::routing_key_hex(key),
        args.to
    );
    Ok(())
}

/// A client for one node's admin API.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    /// A client for `base` (e.g. `http://127.0.0.1:7700`).
    pub fn new(base: &str, token: Option<String>) -> anyhow::Result<Self> {
        let base = if base.contains("://") {
            base.trim_end_matches('/').to_owned()
        } else {
            format!("http://{}", base.trim_end_matches('/'))
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .context("building HTTP client")?;
        Ok(Client { http, base, token })
    }

    async fn send<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> anyhow::Result<(T, String)> {
        let request = match &self.token {
            Some(t) => request.bearer_auth(t),
            None => request,
        };
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach the admin API at {}", self.base))?;
        let status = response.status();
        let text = response.text().await.context("reading the response")?;
        if !status.is_success() {
            if let Ok(problem) = serde_json::from_str::<Problem>(&text) {
                bail!("{} ({}): {}", problem.title, problem.status, problem.detail);
            }
            bail!("HTTP {status}: {text}");
        }
        let value = serde_json::from_str(&text)
            .with_context(|| format!("unexpected response from {}", self.base))?;
        Ok((value, text))
    }

    /// `GET path`, decoded; also returns the raw JSON.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<(T, String)> {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    /// `POST path` with a JSON body.
    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<(T, String)> {
        self.send(self.http.post(format!("{}{path}", self.base)).json(body))
            .await
    }
}

/// Renders rows as an aligned text table.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &mut dyn Iterator<Item = &str>| {
        let mut first = true;
        for (cell, w) in cells.zip(&widths) {
            if !first {
                out.push_str("  ");
            }
            first = false;
            let _ = write!(out, "{cell:<w$}");
        }
        let trimmed = out.trim_end().len();
        out.truncate(trimmed);
        out.push('\n');
    };
    line(&mut out, &mut headers.iter().copied());
    for row in rows {
        line(&mut out, &mut row.iter().map(String::as_str));
    }
    out
}

/// The members table `nexus ctl members` and `nexus demo` print.
pub fn members_table(members: &Members) -> String {
    let rows: Vec<Vec<String>> = members
        .members
        .iter()
        .map(|m| {
            vec![
                format!("{}{}", m.name, if m.local { " *" } else { "" }),
                m.id.chars().take(12).collect(),
                m.addr.clone(),
                m.state.clone(),
                m.incarnation.to_string(),
                m.meta.admin.clone().unwrap_or_else(|| "-".into()),
                if m.meta.roles.is_empty() {
                    "-".into()
                } else {
                    m.meta.roles.join(",")
                },
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "ID",
            "ADDR",
            "STATE",
            "INCARNATION",
            "ADMIN",
            "ROLES",
        ],
        &rows,
    )
}

/// Runs one `nexus ctl` command, printing its result.
pub async fn run(args: CtlArgs) -> anyhow::Result<()> {
    if let CtlCommand::Send(send_args) = &args.command {
        return send(send_args);
    }
    let client = Client::new(&args.admin, args.token.clone())?;
    match args.command {
        CtlCommand::Node => {
            let (n, raw): (Node, _) = client.get("/v1/node").await?;
            if args.json {
                println!("{raw}");
            } else {
                let rows = vec![
                    vec!["id".into(), n.id],
                    vec!["name".into(), n.name],
                    vec!["state".into(), n.state],
                    vec!["incarnation".into(), n.incarnation.to_string()],
                    vec!["gossip".into(), format!("{} (bound {})", n.addr, n.bind)],
                    vec!["admin".into(), n.admin],
                    vec!["version".into(), n.version],
                    vec!["roles".into(), n.roles.join(",")],
                    vec!["data dir".into(), n.data_dir],
                    vec!["uptime".into(), format!("{}s", n.uptime_s)],
                ];
                print!("{}", table(&["FIELD", "VALUE"], &rows));
            }
        }
        CtlCommand::Members => {
            let (m, raw): (Members, _) = client.get("/v1/members").await?;
            if args.json {
                println!("{raw}");
            } else {
                print!("{}", members_table(&m));
            }
        }
        CtlCommand::Actors => {
            let (a, raw): (Actors, _) = client.get("/v1/actors").await?;
            if args.json {
                println!("{raw}");
            } else {
                let rows: Vec<Vec<String>> = a
                    .children
                    .iter()
                    .map(|c| {
                        vec![
                            format!("{}/{}", a.name, c.name),
                            c.status.clone(),
                            c.restarts.to_string(),
                            format!("{}/{}", c.recent_failures, a.restarts_max),
                            c.last_failure.clone().unwrap_or_else(|| "-".into()),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    table(
                        &["ACTOR", "STATUS", "RESTARTS", "RECENT/MAX", "LAST FAILURE"],
                        &rows
                    )
                );
            }
        }
        CtlCommand::Send(_) => {
            unreachable!("handled above: send talks to the data plane, not the admin API")
        }
        CtlCommand::Leave { reason } => {
            let body = serde_json::json!({ "reason": reason });
            let (r, raw): (LeaveResponse, _) = client.post("/v1/leave", &body).await?;
            if args.json {
                println!("{raw}");
            } else {
                println!("node {}; it will exit shortly", r.status);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let t = table(
            &["A", "LONG HEADER"],
            &[
                vec!["xxxxx".into(), "1".into()],
                vec!["y".into(), "22".into()],
            ],
        );
        assert_eq!(t, "A      LONG HEADER\nxxxxx  1\ny      22\n");
    }
}
