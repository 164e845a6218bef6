//! `mistify-image-server`: see `mistify_zfs::image_server`.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let flags = mistify_zfs::image_server::Flags::parse();
    match mistify_zfs::image_server::run(flags).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mistify-image-server: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
