//! The smallest real sub-agent: one method, `Simple.DoStuff`, that fails `--percent` of
//! the time (to exercise the agent's error handling) and otherwise echoes the guest.
//!
//! `cargo run -p mistify-rpc --example simple-subagent -- --port 21356 --percent 50`

use clap::Parser;
use mistify_rpc::{GuestRequest, GuestResponse, Server};

#[derive(Parser)]
struct Flags {
    #[arg(short, long, default_value_t = 21356)]
    port: u16,
    /// How often to fail, in percent (values over 100 count as 100).
    #[arg(short = 'c', long, default_value_t = 50)]
    percent: u32,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let Flags { port, percent } = Flags::parse();
    let percent = percent.min(100);
    mistify_http::init_tracing("info", Default::default()).map_err(std::io::Error::other)?;

    Server::new("simple")
        .method("Simple.DoStuff", move |req: GuestRequest| async move {
            if rand::random_range(0..100) < percent {
                return Err(format!("returning an error as I do {percent}% of the time"));
            }
            Ok(GuestResponse {
                guest: req.guest,
                ..Default::default()
            })
        })
        .serve(port)
        .await
}
