//! `nfirewalld`: this hypervisor's guest firewall (see `lochness_firewall`).

use clap::Parser;

#[tokio::main]
async fn main() {
    let args = lochness_firewall::cli::Args::parse();
    if let Err(e) = lochness_firewall::daemon::main(args).await {
        eprintln!("nfirewalld: {e}");
        std::process::exit(1);
    }
}
