//! `mistify`: the operator CLI of the mistify agent (see `docs/cli.md`).

fn main() -> std::process::ExitCode {
    mistify_cli::main()
}
