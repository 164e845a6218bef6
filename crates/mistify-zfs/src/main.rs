//! `mistify-zfs`: see the library for everything.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let flags = mistify_zfs::cli::Flags::parse();
    match mistify_zfs::cli::run(flags).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mistify-zfs: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
