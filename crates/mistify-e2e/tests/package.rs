//! The Debian package (`cargo deb -p mistify-supervisor`, what `make deb` builds): the
//! build phase of `make test` packages the test run's own binaries into
//! `target/debian-test/`; this test unpacks it into a scratch root with `dpkg-deb -x`,
//! checks its layout (daemons in `/usr/sbin`, the operator CLIs in `/usr/bin` with their
//! man pages and completions), validates its production manifests with the supervisor's
//! loader and runs its binaries.

use std::path::Path;
use std::process::Command;

use mistify_e2e::{profile_dir, skipped, TempDir};
use mistify_supervisor::manifest::load_dir_with;

/// The daemons, in `/usr/sbin`.
const DAEMONS: [&str; 15] = [
    "mistify-agent",
    "mistify-libvirt",
    "mistify-zfs",
    "mistify-image-server",
    "mistify-supervisord",
    "lochness-heartbeat",
    "cguestd",
    "chypervisord",
    "cnetworkd",
    "cplacerd",
    "cworkerd",
    "cbootstrapd",
    "cdhcpd",
    "nfirewalld",
    "nconfigd",
];

/// The operator CLIs, in `/usr/bin`.
const CLIS: [&str; 3] = ["mistify", "mistify-supervisor", "lochness"];

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_package_installs_with_the_documented_layout() {
    if skipped("package") {
        return;
    }
    // Made by the build phase from the binaries of this profile.
    let packages = profile_dir()
        .parent()
        .map(|target| target.join("debian-test"))
        .expect("target directory");
    let deb = std::fs::read_dir(&packages)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .unwrap_or_else(|| {
            panic!(
                "no package in {}: tests never run cargo; the build phase of `make test` \
                 makes it (`scripts/cli-assets.sh {}`, then `cargo deb -p mistify-supervisor \
                 --no-build --fast --profile dev --output {}`)",
                packages.display(),
                profile_dir().display(),
                packages.display()
            )
        });
    let dir = TempDir::new("deb");
    let name = deb
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    assert!(name.starts_with("mistify_"), "package file {name}");

    let fields = run(Command::new("dpkg-deb").args(["-f"]).arg(&deb).args([
        "Package",
        "Depends",
        "Description",
    ]));
    assert!(fields.contains("Package: mistify\n"), "{fields}");
    assert!(fields.contains("libvirt0"), "{fields}");
    // The description is the whole stack's, not only the supervisor's.
    let (synopsis, long) = fields
        .split_once("Description: ")
        .and_then(|(_, d)| d.split_once('\n'))
        .expect("a Description field");
    assert!(synopsis.len() < 80, "synopsis too long: {synopsis:?}");
    for part in [
        "agent",
        "sub-agents",
        "image server",
        "supervisor",
        "CLIs",
        "heartbeat",
    ] {
        assert!(
            synopsis.contains(part),
            "{part} not in the synopsis {synopsis:?}"
        );
    }
    for name in DAEMONS.iter().chain(&CLIS) {
        assert!(
            long.contains(name),
            "{name} not in the long description:\n{long}"
        );
    }

    let root = dir.path().join("root");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    for (dir, names) in [("usr/sbin", &DAEMONS[..]), ("usr/bin", &CLIS[..])] {
        for name in names {
            let path = root.join(dir).join(name);
            assert!(path.is_file(), "{} is missing", path.display());
            // cbootstrapd keeps the original's `-v/--version` (the image version).
            let flag = if *name == "cbootstrapd" {
                "-V"
            } else {
                "--version"
            };
            let version = run(Command::new(&path).arg(flag));
            assert!(
                version.contains(env!("CARGO_PKG_VERSION")),
                "{name} --version printed {version:?}"
            );
        }
    }
    // The CLIs moved from /usr/sbin: no copy is left there.
    for name in CLIS {
        let old = root.join("usr/sbin").join(name);
        assert!(!old.exists(), "{} is still shipped", old.display());
    }
    cli_assets(&root, "mistify");
    cli_assets(&root, "lochness");
    // mistify-supervisor gains `man` and `completions` on another branch; until the
    // packaged binary has them, scripts/cli-assets.sh leaves its files out.
    let supervisor = root.join("usr/bin/mistify-supervisor");
    let has_man = Command::new(&supervisor)
        .arg("man")
        .output()
        .is_ok_and(|o| o.status.success());
    if has_man {
        cli_assets(&root, "mistify-supervisor");
    } else {
        eprintln!(
            "SKIPPED: the man page and completions of mistify-supervisor \
             ({} has no `man` command yet)",
            supervisor.display()
        );
    }
    for file in [
        "etc/mistify/agent.json",
        "etc/mistify/supervisor/services/10-mistify-zfs.json",
        "etc/mistify/supervisor/services/20-mistify-libvirt.json",
        "etc/mistify/supervisor/services/30-mistify-agent.json",
        "usr/lib/systemd/system/mistify-supervisord.service",
        "usr/share/doc/mistify/operations.md",
        "usr/share/doc/mistify/examples/40-lochness-heartbeat.json",
        "usr/share/doc/mistify/examples/controller/10-cguestd.json",
        "usr/share/doc/mistify/copyright",
    ] {
        assert!(root.join(file).is_file(), "{file} is missing");
    }
    let unit =
        std::fs::read_to_string(root.join("usr/lib/systemd/system/mistify-supervisord.service"))
            .expect("unit");
    assert!(
        unit.contains("ExecStart=/usr/sbin/mistify-supervisord"),
        "{unit}"
    );
    assert!(unit.contains("--dir /etc/mistify/supervisor"), "{unit}");

    // The configuration files are conffiles (an upgrade keeps an operator's edits).
    let control = dir.path().join("control");
    run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control));
    let conffiles = std::fs::read_to_string(control.join("conffiles")).expect("conffiles");
    assert!(conffiles.contains("/etc/mistify/agent.json"), "{conffiles}");
    assert!(
        conffiles.contains("/etc/mistify/supervisor/services/30-mistify-agent.json"),
        "{conffiles}"
    );
    let postinst = std::fs::read_to_string(control.join("postinst")).expect("postinst");
    assert!(postinst.contains("/var/lib/mistify"), "{postinst}");

    // The production manifests pass the supervisor's validation, with the defaults they
    // would get on a host (no environment overrides) ...
    let loaded = load_dir_with(&root.join("etc/mistify/supervisor"), &|_| None);
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    let names: Vec<&str> = loaded.manifests.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["subagent:zfs", "subagent:libvirt", "agent"]);
    for m in &loaded.manifests {
        assert!(
            m.command[0].starts_with("/usr/sbin/"),
            "{} runs {}",
            m.name,
            m.command[0]
        );
        assert!(
            Path::new(&m.command[0])
                .file_name()
                .is_some_and(|n| DAEMONS.iter().any(|b| n == *b)),
            "{} runs a binary the package does not ship: {}",
            m.name,
            m.command[0]
        );
    }
    // ... and the packaged agent accepts the packaged agent.json.
    run(Command::new(root.join("usr/sbin/mistify-agent"))
        .args(["--check-config", "-c"])
        .arg(root.join("etc/mistify/agent.json")));
}

/// The man page and the bash, zsh and fish completions of the operator CLI `cli`, as
/// `scripts/cli-assets.sh` made them, installed where man, bash-completion, zsh and fish
/// look.
fn cli_assets(root: &Path, cli: &str) {
    let page = root.join(format!("usr/share/man/man1/{cli}.1.gz"));
    assert!(page.is_file(), "{} is missing", page.display());
    let roff = run(Command::new("gzip").arg("-dc").arg(&page));
    assert!(
        roff.contains(&format!(".TH {cli} 1")),
        "{} is not the man page of {cli}:\n{roff}",
        page.display()
    );
    for (file, needle) in [
        (
            format!("usr/share/bash-completion/completions/{cli}"),
            format!("complete -F _{}", cli.replace('-', "__")),
        ),
        (
            format!("usr/share/zsh/vendor-completions/_{cli}"),
            format!("#compdef {cli}"),
        ),
        (
            format!("usr/share/fish/vendor_completions.d/{cli}.fish"),
            format!("complete -c {cli}"),
        ),
    ] {
        let text = std::fs::read_to_string(root.join(&file))
            .unwrap_or_else(|e| panic!("{file} is missing: {e}"));
        assert!(text.contains(&needle), "{file} lacks {needle:?}:\n{text}");
    }
}
