//! The `lochness` binary as a process: usage errors (exit 2, nothing sent), an
//! unreachable daemon (exit 1, named), arguments on stdin, the `guest`/`hv` names,
//! completions and the manual page. The commands against running daemons are tested
//! end to end with the daemons.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use mistify_e2e::{free_port, TempDir};

const HV: &str = "aaaa0001-1111-4111-8111-000000000001";

fn lochness() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_lochness"))
}

/// Runs `program` with `args` and `stdin` (or a closed stdin), with the daemons' URLs
/// pointing at a loopback port nothing listens on.
fn run_as(program: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let dead = format!("http://127.0.0.1:{}", free_port());
    let mut child = Command::new(program)
        .args(args)
        .env("LOCHNESS_GUESTS", &dead)
        .env("LOCHNESS_HYPERVISORS", &dead)
        .env("LOCHNESS_NETWORKS", &dead)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start lochness");
    {
        let mut input = child.stdin.take().expect("stdin");
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).expect("write stdin");
        }
    }
    child.wait_with_output().expect("lochness ran")
}

fn run(args: &[&str], stdin: Option<&str>) -> Output {
    run_as(&lochness(), args, stdin)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn usage_errors_exit_2_before_sending() {
    let cases: [(&[&str], Option<&str>, &str); 7] = [
        (
            &["guest", "reboot", "not-a-uuid"],
            None,
            "invalid guest id \"not-a-uuid\"",
        ),
        (
            &["hv", "modify", HV],
            None,
            "expected pairs of <id> <spec>, got 1 argument",
        ),
        (
            &["hv", "modify"],
            Some(&format!("{HV} {{\"ip\": \"10.0.0.1\"}}\n{HV}\n")),
            "got 3 arguments",
        ),
        (
            &["guest", "delete"],
            Some("junk\n"),
            "invalid guest id \"junk\"",
        ),
        (&["guest", "create"], Some("[1, 2]\n"), "not a JSON object"),
        (
            &["hv", "config", "modify", HV, "{\"a\": 1}"],
            None,
            "not a string",
        ),
        (
            &["guest", "create", "--flavor", HV],
            None,
            "needs --flavor and --network",
        ),
    ];
    for (args, stdin, needle) in cases {
        let out = run(args, stdin);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.starts_with("error: ") && err.contains(needle),
            "{args:?}: {err}"
        );
        // Refused before anything was sent: no connection error.
        assert!(!err.contains("failed"), "{args:?}: {err}");
        assert!(out.stdout.is_empty());
    }
    // clap's own usage errors.
    for args in [
        &["guest", "resume", HV][..],
        &["guest", "list", "-j", "-o", "table"],
        &["vlan", "create", "--tag", "4096"],
    ] {
        let out = run(args, None);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn an_unreachable_daemon_is_named_and_exits_1() {
    let out = run(&["guest", "list"], None);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.starts_with("error: GET /guests"), "{err}");
    assert!(
        err.contains("to cguestd failed") && err.contains("onnection refused"),
        "{err}"
    );

    let out = run(&["vlan", "groups", "list", "10"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("GET /vlans/tags/10/groups to cnetworkd failed"),
        "{}",
        stderr(&out)
    );

    // An empty stdin: nothing to do, nothing sent.
    let out = run(&["guest", "delete", "--wait"], Some("\n"));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(out.stdout.is_empty() && out.stderr.is_empty());

    // Ids read from stdin: the first is sent (and fails).
    let out = run(&["hv", "resources"], Some(&format!("{HV}\n")));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(&format!(
            "GET /hypervisors/{HV}/resources to chypervisord failed"
        )),
        "{}",
        stderr(&out)
    );
}

#[test]
fn guest_and_hv_names_behave_as_the_original_clis() {
    let dir = TempDir::new("lochness-cli-names");
    for name in ["guest", "hv"] {
        std::os::unix::fs::symlink(lochness(), dir.path().join(name)).expect("symlink");
    }
    // `hv -s URL config list <hv>`: chypervisord at the -s address.
    let port = free_port();
    let out = run_as(
        &dir.path().join("hv"),
        &[
            "-s",
            &format!("http://127.0.0.1:{port}"),
            "config",
            "list",
            HV,
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "GET /hypervisors/{HV}/config to chypervisord failed"
        )),
        "{err}"
    );
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");

    let out = run_as(&dir.path().join("guest"), &["-j", "job", "junk"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("invalid job id"), "{}", stderr(&out));

    let out = run_as(&dir.path().join("guest"), &["--help"], None);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("Usage: lochness guest"), "{help}");
}

#[test]
fn completions_and_manual_page() {
    let out = run(&["completions", "bash"], None);
    assert_eq!(out.status.code(), Some(0));
    let script = String::from_utf8_lossy(&out.stdout);
    assert!(script.contains("_lochness()"), "{script}");
    let out = run(&["man"], None);
    assert_eq!(out.status.code(), Some(0));
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(
        page.contains(".TH lochness"),
        "{}",
        &page[..200.min(page.len())]
    );
    assert!(page.contains("lochness hv subnets delete"));
}
