//! `cbootstrapd`: see the `lochness_bootstrap` crate.

use clap::Parser;

#[tokio::main]
async fn main() {
    let args = lochness_bootstrap::Args::parse();
    std::process::exit(lochness_bootstrap::run(args).await);
}
