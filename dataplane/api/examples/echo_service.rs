//! A model service on the fabric: serves the sample echo model through the SDK until Ctrl-C.
//!
//! ```sh
//! cargo run --release -- demo      # in another terminal: a 3-node fabric (admin on 7701–7703)
//! cargo run -p nexus-api --example echo_service -- http://127.0.0.1:7701
//! ```
//!
//! The service gets its own key certified by the fabric's CA, registers `echo-example`
//! (task `llm.chat`) with the node whose admin API is given (set `NEXUS_ADMIN_TOKEN` if it
//! needs one), and answers NexAPI calls on its own NexStream endpoint.

use std::time::Duration;

use nexus_api::sample::EchoModel;
use nexus_api::{NodeConfig, Service, ServiceConfig};
use nexus_registry::Sad;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let admin = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:7701".into());
    let token = std::env::var("NEXUS_ADMIN_TOKEN").ok();
    let node = NodeConfig::discover(&admin, token).await?;
    let sad = Sad::from_json(
        br#"{"id": "echo-example", "tasks": ["llm.chat"], "model_family": "echo",
             "context_window": 4096, "latency_ms_p50": 5, "latency_ms_p99": 20, "ttl_s": 30}"#,
    )?;
    let model = EchoModel::new("echo", Duration::from_millis(50));
    let service = Service::serve(ServiceConfig::new(node, sad), model).await?;
    println!(
        "echo-example serving on {} (certificate serial {}); Ctrl-C to stop",
        service.addr(),
        service.mic_serial()
    );
    tokio::signal::ctrl_c().await?;
    service.shutdown().await?;
    println!("withdrawn");
    Ok(())
}
