//! A client on the fabric: states an intent, and prints a token stream as it arrives.
//!
//! ```sh
//! cargo run -p nexus-api --example chat -- http://127.0.0.1:7703 "tokens from across the fabric"
//! ```
//!
//! The client resolves `llm.chat` through the node whose admin API is given (over the node's
//! binary NexAPI endpoint), opens a NexStream session straight to the best service (both ends
//! proving CA-issued keys) and streams. Run `echo_service` first.

use std::io::Write;

use nexus_api::{Bytes, Client, ClientConfig, NodeConfig};
use nexus_registry::Intent;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let admin = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:7703".into());
    let prompt = args
        .next()
        .unwrap_or_else(|| "hello from the other side of the fabric".into());
    let token = std::env::var("NEXUS_ADMIN_TOKEN").ok();
    let client = Client::connect(ClientConfig::new(
        NodeConfig::discover(&admin, token).await?,
    ))
    .await?;
    let intent = Intent::new("llm.chat");
    let answer = client.resolve(&intent).await?;
    for c in &answer.candidates {
        println!(
            "candidate {} score {:.3} at {:?}:{}",
            c.service, c.score, c.host, c.port
        );
    }
    let mut stream = client.stream(&intent, "echo", Bytes::from(prompt)).await?;
    while let Some(token) = stream.next().await {
        print!("{}", token?.text);
        std::io::stdout().flush()?;
    }
    println!();
    if let Some(end) = stream.end() {
        println!("({} tokens, {:?})", end.tokens, end.finish);
    }
    Ok(())
}
