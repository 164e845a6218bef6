//! The copies under `tests/` of the shared wire fixtures and replay tool stay identical
//! to `../shared` when a checkout has it (a plain clone has only the copies).

use std::path::Path;

fn compare_dirs(copy: &Path, original: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let entries =
        std::fs::read_dir(original).unwrap_or_else(|e| panic!("{}: {e}", original.display()));
    for entry in entries.flatten() {
        let name = entry.file_name();
        let ours = copy.join(&name);
        if !entry.path().is_file() {
            continue;
        }
        match (std::fs::read(entry.path()), std::fs::read(&ours)) {
            (Ok(a), Ok(b)) if a == b => {}
            (Ok(_), Ok(_)) => problems.push(format!(
                "{} differs from {}",
                ours.display(),
                entry.path().display()
            )),
            (_, Err(_)) => problems.push(format!("{} is missing", ours.display())),
            (Err(e), _) => problems.push(format!("{}: {e}", entry.path().display())),
        }
    }
    problems
}

#[test]
fn copies_match_shared() {
    let root = mistify_e2e::workspace_root();
    // Whatever the checkout, the copies must be there.
    for file in [
        "rpc-envelope.json",
        "agent-rest.json",
        "agent-test-rpc.json",
        "README.md",
    ] {
        assert!(
            mistify_e2e::fixtures_dir()
                .join("wire")
                .join(file)
                .is_file(),
            "tests/fixtures/wire/{file} missing"
        );
    }
    assert!(root.join("tests/tools/replay.py").is_file());
    let Some(shared) = mistify_e2e::shared_dir() else {
        eprintln!("no ../shared beside this checkout: only the copies are checked");
        return;
    };
    let mut problems = compare_dirs(
        &mistify_e2e::fixtures_dir().join("wire"),
        &shared.join("wire"),
    );
    let (tool, ours) = (
        shared.join("tools/replay.py"),
        root.join("tests/tools/replay.py"),
    );
    if std::fs::read(&tool).ok() != std::fs::read(&ours).ok() {
        problems.push(format!(
            "{} differs from {}",
            ours.display(),
            tool.display()
        ));
    }
    assert!(
        problems.is_empty(),
        "refresh the copies (cp ../shared/wire/* tests/fixtures/wire/; cp ../shared/tools/replay.py tests/tools/):\n{}",
        problems.join("\n")
    );
}
