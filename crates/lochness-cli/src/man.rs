//! Shell completions and the manual page, generated from the flags.

use clap::CommandFactory;
use clap_mangen::roff::{bold, italic, roman, Roff};

use crate::Cli;

/// The completion script of `shell` for `lochness`.
pub fn completions(shell: clap_complete::Shell) -> String {
    let mut command = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "lochness", &mut script);
    String::from_utf8_lossy(&script).into_owned()
}

/// Every command that has no subcommands, depth first.
fn leaves(command: &clap::Command, out: &mut Vec<clap::Command>) {
    for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
        if sub.has_subcommands() {
            leaves(sub, out);
        } else {
            out.push(sub.clone());
        }
    }
}

/// The manual page `lochness(1)` in roff: clap's title, synopsis, description and
/// options, then every command with its usage, arguments and flags, the exit status,
/// the environment and the `guest`/`hv` names.
pub fn page() -> std::io::Result<String> {
    let mut command = Cli::command();
    command.build();
    let mut out = Vec::new();
    let man = clap_mangen::Man::new(command.clone());
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;

    let mut roff = Roff::default();
    roff.control("SH", ["COMMANDS"]);
    let mut all = Vec::new();
    leaves(&command, &mut all);
    for sub in all {
        let usage = sub
            .clone()
            .render_usage()
            .to_string()
            .trim_start_matches("Usage:")
            .trim()
            .to_string();
        roff.control("TP", []);
        roff.text([bold(usage)]);
        if let Some(about) = sub.get_about() {
            roff.text([roman(about.to_string())]);
        }
        for arg in sub
            .get_arguments()
            .filter(|a| !a.is_hide_set() && !a.is_global_set())
            .filter(|a| !["help", "version"].contains(&a.get_id().as_str()))
        {
            let value = arg
                .get_value_names()
                .map(|names| names.join(" "))
                .unwrap_or_else(|| arg.get_id().as_str().to_uppercase());
            let takes_value = arg.get_num_args().is_some_and(|n| n.takes_values());
            let name = match arg.get_long() {
                Some(long) if takes_value => format!("--{long} {value}"),
                Some(long) => format!("--{long}"),
                None => value,
            };
            roff.control("RS", []);
            roff.control("TP", []);
            roff.text([italic(name)]);
            if let Some(help) = arg.get_help() {
                roff.text([roman(help.to_string())]);
            }
            roff.control("RE", []);
        }
    }
    roff.control("SH", ["ARGUMENTS ON STDIN"]);
    roff.text([roman(
        "A command given no ids, specs or pairs reads them from stdin when stdin is not a \
         terminal, one per line: blank lines are skipped, each line is split at its first \
         space into at most two arguments (so `<id> <spec>` pairs work line by line); the \
         specs of create are whole lines. The list commands of hv, network subnets, subnet \
         addresses and the VLAN memberships act on every item when given nothing.",
    )]);
    roff.control("SH", ["EXIT STATUS"]);
    roff.text([roman(
        "0 on success; 1 when a daemon refused a request or could not be reached, or a job \
         waited for ended in error; 2 for a usage error (bad flags, an id that is not a \
         UUID, a spec that is not a JSON object, an odd number of modify arguments), when \
         nothing was sent.",
    )]);
    roff.control("SH", ["ENVIRONMENT"]);
    roff.text([roman(
        "LOCHNESS_GUESTS (--guests), LOCHNESS_HYPERVISORS (--hypervisors), \
         LOCHNESS_NETWORKS (--networks).",
    )]);
    roff.control("SH", ["GUEST AND HV"]);
    roff.text([roman(
        "Installed under the names guest and hv (links to lochness), the program behaves \
         as lochness guest and lochness hv, so scripts written for the original guest and \
         hv commands keep working: -s/--server and -j/--json are accepted as before.",
    )]);
    roff.control("SH", ["SEE ALSO"]);
    roff.text([roman(
        "mistify(1); docs/cli.md and docs/cluster.md of the mistify-rs sources.",
    )]);
    out.extend_from_slice(roff.render().as_bytes());
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_and_man_page() {
        let bash = completions(clap_complete::Shell::Bash);
        assert!(bash.contains("lochness"), "{bash}");
        assert!(bash.contains("vlangroup"));
        let page = page().unwrap();
        assert!(page.starts_with(".ie"), "{}", &page[..80.min(page.len())]);
        for needle in [
            "lochness guest create",
            "lochness hv subnets delete",
            "lochness network subnets add",
            "EXIT STATUS",
            "LOCHNESS_GUESTS",
        ] {
            assert!(page.contains(needle), "{needle} missing");
        }
    }
}
