//! `mistify-libvirt`: see the library for everything.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let flags = mistify_libvirt::cli::Flags::parse();
    match mistify_libvirt::cli::run(flags).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mistify-libvirt: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
