//! `cplacerd`: places guests on hypervisors (see `lochness_work::placer`).

use clap::Parser;

#[tokio::main]
async fn main() {
    let args = lochness_work::cli::PlacerArgs::parse();
    if let Err(e) = lochness_work::daemon::placer(args).await {
        eprintln!("cplacerd: {e}");
        std::process::exit(1);
    }
}
