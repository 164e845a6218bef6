//! `cnetworkd`: see the `lochness_api` crate.

fn main() {
    lochness_api::main(lochness_api::Daemon::Networks);
}
