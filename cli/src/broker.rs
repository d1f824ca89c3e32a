//! `relay broker`: run only the embedded MQTT broker (rumqttd), e.g. to try
//! `relay run` against it, or as the restartable broker process of the
//! integration tests. `relay dev` embeds the same broker in-process.

use std::net::{IpAddr, SocketAddr};

use anyhow::Result;
use clap::Args;

use crate::embedded_broker::EmbeddedBroker;

/// Run the embedded MQTT broker (MQTT 3.1.1, anonymous, in-memory sessions) until killed.
#[derive(Debug, Args)]
pub struct ListenArgs {
    /// Address to listen on (use 0.0.0.0 to accept devices from the network).
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: IpAddr,
    /// Port to listen on (0 = any free port, printed at start).
    #[arg(long, default_value_t = 1883)]
    pub port: u16,
}

pub fn run(args: ListenArgs) -> Result<()> {
    let broker = EmbeddedBroker::start(SocketAddr::new(args.bind, args.port))?;
    println!("relay broker listening on {}", broker.addr());
    // rumqttd runs on its own threads and has no shutdown: park until the process is killed.
    loop {
        std::thread::park();
    }
}
