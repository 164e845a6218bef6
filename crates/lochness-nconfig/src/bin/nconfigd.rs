//! `nconfigd`: see the `lochness_nconfig` crate.

use clap::Parser;

#[tokio::main]
async fn main() {
    let args = lochness_nconfig::Args::parse();
    std::process::exit(lochness_nconfig::run(args).await);
}
