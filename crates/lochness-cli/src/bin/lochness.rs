//! `lochness`: the operator CLI of the cluster (see `docs/cli.md`); also installed as
//! `guest` and `hv`.

fn main() -> std::process::ExitCode {
    lochness_cli::main()
}
