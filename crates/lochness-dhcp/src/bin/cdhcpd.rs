//! `cdhcpd`: see the `lochness_dhcp` crate and docs/dhcp.md.

use clap::Parser;

#[tokio::main]
async fn main() {
    let args = lochness_dhcp::cli::Args::parse();
    if let Err(e) = lochness_dhcp::daemon::run(args).await {
        eprintln!("cdhcpd: {e}");
        std::process::exit(1);
    }
}
