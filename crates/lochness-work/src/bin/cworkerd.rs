//! `cworkerd`: works the cluster's jobs on the hypervisors' agents (see
//! `lochness_work::worker`).

use clap::Parser;

#[tokio::main]
async fn main() {
    let args = lochness_work::cli::WorkerArgs::parse();
    if let Err(e) = lochness_work::daemon::worker(args).await {
        eprintln!("cworkerd: {e}");
        std::process::exit(1);
    }
}
