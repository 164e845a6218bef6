use clap::Parser;
use mistify_supervisor_cli::cli::{run, Cli};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let code = rt.block_on(run(cli));
    std::process::ExitCode::from(u8::try_from(code).unwrap_or(1))
}
