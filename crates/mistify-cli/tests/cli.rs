//! The `mistify` binary against a real agent (`mistify-agent`) with the fake sub-agent
//! `test-rpc-service` behind it, each test on its own free ports and its own store.

use std::process::{Command, Output};

use mistify_e2e::{binary, example, free_port, workspace_root, Daemon, TempDir};
use serde_json::Value;

fn nanos() -> u128 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// A fresh guest id in UUID form.
fn guest_id() -> String {
    let n = nanos();
    format!(
        "{:08x}-0000-4000-8000-{:012x}",
        std::process::id(),
        n & 0xffff_ffff_ffff
    )
}

/// The fake sub-agent and an agent in front of it.
struct Stack {
    agent: Daemon,
    _fake: Daemon,
    dir: TempDir,
}

impl Stack {
    /// `config/agent.dev.json` pointed at a fresh fake; `reboot_method` replaces the
    /// method of the `reboot` action.
    fn start(name: &str, reboot_method: Option<&str>) -> Stack {
        let dir = TempDir::new(name);
        let fake_port = free_port();
        let fake = Daemon::start(
            &example("test-rpc-service"),
            &[
                "--port".into(),
                fake_port.to_string(),
                "--log-level".into(),
                "warn".into(),
            ],
            fake_port,
        );

        let text = std::fs::read_to_string(workspace_root().join("config/agent.dev.json"))
            .expect("config/agent.dev.json");
        let mut config: Value = serde_json::from_str(&text).expect("config json");
        for service in config["services"]
            .as_object_mut()
            .expect("services")
            .values_mut()
        {
            service["port"] = fake_port.into();
        }
        let db = dir.path().join("agent.redb");
        config["dbpath"] = db.display().to_string().into();
        if let Some(method) = reboot_method {
            config["actions"]["reboot"]["stages"][0]["method"] = method.into();
        }
        let file = dir.path().join("agent.json");
        std::fs::write(&file, config.to_string()).expect("write config");

        let port = free_port();
        let agent = Daemon::start(
            &binary("mistify-agent"),
            &[
                "-a".into(),
                format!("127.0.0.1:{port}"),
                "-c".into(),
                file.display().to_string(),
                "--db-path".into(),
                db.display().to_string(),
                "--log-level".into(),
                "error".into(),
            ],
            port,
        );
        Stack {
            agent,
            _fake: fake,
            dir,
        }
    }

    /// Runs `mistify --agent <agent> args…`.
    fn run(&self, args: &[&str]) -> Run {
        let output = Command::new(env!("CARGO_BIN_EXE_mistify"))
            .env_remove("MISTIFY_AGENT")
            .arg("--agent")
            .arg(self.agent.url())
            .args(args)
            .output()
            .expect("run mistify");
        Run::from(args, output)
    }

    /// `guests create --id ID --wait …` that must succeed.
    fn create_guest(&self) -> String {
        let id = guest_id();
        self.run(&[
            "guests", "create", "--id", &id, "--memory", "512", "--cpu", "2", "--wait",
        ])
        .ok();
        id
    }
}

/// The outcome of one run of the binary.
struct Run {
    args: String,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn from(args: &[&str], output: Output) -> Run {
        Run {
            args: args.join(" "),
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Asserts exit status 0 and an empty stderr; the run.
    fn ok(self) -> Run {
        assert_eq!(
            self.code,
            Some(0),
            "`mistify {}` failed: {}",
            self.args,
            self
        );
        assert_eq!(self.stderr, "", "`mistify {}`: {}", self.args, self);
        self
    }

    /// Asserts exit status `code`; the run.
    fn fails_with(self, code: i32) -> Run {
        assert_eq!(self.code, Some(code), "`mistify {}`: {}", self.args, self);
        self
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("`mistify {}` printed no JSON ({e}): {self}", self.args))
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// The data rows of a table (header dropped), split on whitespace.
fn rows(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

#[test]
fn create_with_wait_then_list_and_get() {
    let stack = Stack::start("create", None);
    let id = guest_id();
    let run = stack
        .run(&[
            "guests",
            "create",
            "--id",
            &id,
            "--memory",
            "512",
            "--cpu",
            "2",
            "--nic",
            "network=br0,model=virtio",
            "--disk",
            "size=1024,bus=virtio",
            "--metadata",
            "owner=ops",
            "--wait",
        ])
        .ok();
    // The final job: one table row, Complete.
    let job = &rows(&run.stdout)[0];
    assert_eq!(&job[1..4], [id.as_str(), "create", "Complete"], "{run}");

    let list = stack.run(&["guests", "list"]).ok();
    assert!(list.stdout.starts_with("ID "), "{list}");
    let row = rows(&list.stdout)
        .into_iter()
        .find(|r| r[0] == id)
        .unwrap_or_else(|| panic!("guest {id} not listed: {list}"));
    assert_eq!(&row[2..4], ["512M", "2"], "{list}");

    let list = stack.run(&["--json", "guests", "list"]).ok();
    let guests = list.json();
    let guest = guests
        .as_array()
        .and_then(|a| a.iter().find(|g| g["id"] == id.as_str()))
        .unwrap_or_else(|| panic!("guest {id} not in the JSON list: {list}"));
    assert_eq!(guest["memory"], 512);
    assert_eq!(guest["cpu"], 2);
    assert_eq!(guest["nics"][0]["network"], "br0");
    assert_eq!(guest["disks"][0]["size"], 1024);
    assert_eq!(guest["metadata"]["owner"], "ops");

    // The global flags also work after the subcommand.
    let get = stack.run(&["guests", "get", &id, "--json"]).ok();
    assert_eq!(get.json()["id"], id.as_str());
    let get = stack.run(&["guests", "get", &id]).ok();
    assert!(get.stdout.contains("512M"), "{get}");
    assert!(get.stdout.contains("br0"), "{get}");
    assert!(get.stdout.contains("owner"), "{get}");
}

#[test]
fn guest_action_with_wait_and_the_job_log() {
    let stack = Stack::start("action", None);
    let id = stack.create_guest();

    let run = stack
        .run(&["--json", "guests", "reboot", &id, "--wait"])
        .ok();
    let job = run.json();
    assert_eq!(job["Action"], "reboot", "{run}");
    assert_eq!(job["Status"], "Complete", "{run}");
    assert_eq!(job["GuestID"], id.as_str(), "{run}");
    let job_id = job["ID"].as_str().expect("job id").to_string();

    // Without --wait: the job as queued (or already further), exit 0.
    let run = stack.run(&["guests", "shutdown", &id]).ok();
    let queued = &rows(&run.stdout)[0];
    assert_eq!(queued[2], "shutdown", "{run}");

    let list = stack.run(&["jobs", "list"]).ok();
    assert!(
        rows(&list.stdout).iter().any(|r| r[0] == job_id),
        "{job_id} not in {list}"
    );
    let list = stack.run(&["--json", "jobs", "list", "--limit", "1"]).ok();
    assert_eq!(list.json().as_array().map(Vec::len), Some(1), "{list}");
    let list = stack.run(&["--json", "jobs", "list", "--guest", &id]).ok();
    let jobs = list.json();
    let actions: Vec<&str> = jobs
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|j| j["Action"].as_str())
        .collect();
    assert!(
        actions.contains(&"create") && actions.contains(&"reboot"),
        "{list}"
    );

    let get = stack.run(&["jobs", "get", &job_id]).ok();
    assert_eq!(
        &rows(&get.stdout)[0][..4],
        [job_id.as_str(), id.as_str(), "reboot", "Complete"]
    );
    let wait = stack.run(&["jobs", "wait", &job_id, "--timeout", "5"]).ok();
    assert!(wait.stdout.contains("Complete"), "{wait}");

    let unknown = stack.run(&["jobs", "get", "no-such-job"]).fails_with(1);
    assert!(unknown.stderr.starts_with("mistify: "), "{unknown}");
}

#[test]
fn metadata_set_get_and_delete() {
    let stack = Stack::start("metadata", None);
    let set = stack.run(&["metadata", "set", "a=1", "b=two words"]).ok();
    assert!(set.stdout.contains("two words"), "{set}");
    let get = stack.run(&["--json", "metadata", "get"]).ok();
    assert_eq!(get.json(), serde_json::json!({"a": "1", "b": "two words"}));

    stack.run(&["metadata", "set", "a="]).ok();
    let get = stack.run(&["--json", "metadata", "get"]).ok();
    assert_eq!(get.json(), serde_json::json!({"b": "two words"}));
    let table = stack.run(&["metadata", "get"]).ok();
    assert_eq!(rows(&table.stdout), [["b", "two", "words"]]);

    let id = stack.create_guest();
    stack
        .run(&["metadata", "set", "--guest", &id, "role=db", "tier=1"])
        .ok();
    stack
        .run(&["metadata", "set", "--guest", &id, "tier="])
        .ok();
    let get = stack
        .run(&["--json", "metadata", "get", "--guest", &id])
        .ok();
    assert_eq!(get.json(), serde_json::json!({"role": "db"}));
}

#[test]
fn images_list_get_and_fetch() {
    let stack = Stack::start("images", None);
    const IMAGE: &str = "289120e4-ed12-431d-8d18-48f8a94bb05a";
    let list = stack.run(&["images", "list"]).ok();
    assert_eq!(rows(&list.stdout)[0][0], IMAGE, "{list}");
    let list = stack.run(&["--json", "images", "list"]).ok();
    assert_eq!(list.json()[0]["id"], IMAGE, "{list}");
    assert_eq!(list.json()[0]["size"], 1024, "{list}");
    let get = stack.run(&["images", "get", IMAGE]).ok();
    assert!(get.stdout.contains("complete"), "{get}");
    let fetch = stack
        .run(&[
            "images",
            "fetch",
            IMAGE,
            "--source",
            "http://example.invalid/i",
            "--wait",
        ])
        .ok();
    assert!(fetch.stdout.contains("Complete"), "{fetch}");
}

#[test]
fn snapshots_create_list_and_download() {
    let stack = Stack::start("snapshots", None);
    let id = stack.create_guest();

    let create = stack
        .run(&["snapshots", "create", &id, "--name", "s1", "--wait"])
        .ok();
    assert!(create.stdout.contains("Complete"), "{create}");

    // The fake names the guest's dataset `mistify/<what the agent asked for>`.
    let list = stack.run(&["snapshots", "list", &id]).ok();
    let first = &rows(&list.stdout)[0][0];
    assert!(
        first.starts_with("mistify/") && first.ends_with(&format!("{id}@bar")),
        "{list}"
    );
    let list = stack.run(&["--json", "snapshots", "list", &id]).ok();
    assert_eq!(list.json()[0]["id"], first.as_str(), "{list}");

    let file = stack.dir.path().join("snap.bin");
    let file_arg = file.display().to_string();
    let download = stack
        .run(&["snapshots", "download", &id, "s1", "-o", &file_arg])
        .ok();
    assert_eq!(download.stdout, "", "nothing on stdout with -o: {download}");
    assert_eq!(
        std::fs::read_to_string(&file).expect("downloaded file"),
        "foobar"
    );

    let to_stdout = stack.run(&["snapshots", "download", &id, "s1"]).ok();
    assert_eq!(to_stdout.stdout, "foobar");

    let delete = stack
        .run(&["snapshots", "delete", &id, "s1", "--wait"])
        .ok();
    assert!(delete.stdout.contains("Complete"), "{delete}");
}

#[test]
fn unknown_guest_exits_1_with_not_found() {
    let stack = Stack::start("unknown", None);
    let missing = guest_id();
    for args in [
        vec!["guests", "get", missing.as_str()],
        vec!["guests", "reboot", missing.as_str(), "--wait"],
        vec!["metadata", "get", "--guest", missing.as_str()],
    ] {
        let run = stack.run(&args).fails_with(1);
        assert!(run.stderr.starts_with("mistify: "), "{run}");
        assert!(run.stderr.contains("not found"), "{run}");
        assert_eq!(run.stdout, "", "{run}");
    }
}

#[test]
fn bad_input_is_refused_with_a_clear_message() {
    let stack = Stack::start("badinput", None);
    let cases: [(&[&str], &str); 6] = [
        (&["guests", "create", "--memory", "abc"], "--memory"),
        (&["metadata", "set", "nokey"], "KEY=VALUE"),
        (&["metadata", "set", "=v"], "empty key"),
        (
            &["guests", "create", "--nic", "speed=10"],
            "unknown nic key",
        ),
        (&["guests", "create", "--disk", "size=big"], "number"),
        (&["jobs", "list", "--limit", "x"], "--limit"),
    ];
    for (args, needle) in cases {
        let run = stack.run(args).fails_with(2);
        assert!(run.stderr.contains(needle), "{run}");
        assert_eq!(run.stdout, "", "{run}");
    }
    // Refused by the client before anything is sent.
    let run = stack.run(&["guests", "get", "a/b"]).fails_with(2);
    assert!(run.stderr.starts_with("mistify: "), "{run}");
    assert!(run.stderr.contains("must not contain"), "{run}");
    // Nothing was created by any of the above.
    let list = stack.run(&["--json", "guests", "list"]).ok();
    assert!(list.json().as_array().is_none_or(Vec::is_empty), "{list}");
}

#[test]
fn failing_job_with_wait_exits_non_zero_with_its_message() {
    let stack = Stack::start("failing", Some("Test.Nope"));
    let id = stack.create_guest();

    let run = stack.run(&["guests", "reboot", &id, "--wait"]);
    assert_eq!(run.code, Some(1), "{run}");
    // The final job is printed, the failure explained on stderr.
    let job = &rows(&run.stdout)[0];
    assert_eq!(&job[2..4], ["reboot", "Error"], "{run}");
    let job_id = job[0].clone();
    let failed = stack.run(&["--json", "jobs", "get", &job_id]).ok().json();
    let message = failed["Message"].as_str().expect("message").to_string();
    assert!(!message.is_empty());
    assert!(
        run.stderr
            .starts_with(&format!("mistify: job {job_id} (reboot) failed: ")),
        "{run}"
    );
    assert!(run.stderr.contains(&message), "{run}");

    // `jobs wait` on it fails the same way.
    let wait = stack.run(&["jobs", "wait", &job_id]).fails_with(1);
    assert!(wait.stderr.contains(&message), "{wait}");
}

#[test]
fn unreachable_agent_exits_1() {
    let port = free_port();
    let output = Command::new(env!("CARGO_BIN_EXE_mistify"))
        .env("MISTIFY_AGENT", format!("http://127.0.0.1:{port}"))
        .args(["--timeout", "5", "guests", "list"])
        .output()
        .expect("run mistify");
    let run = Run::from(&["guests", "list"], output).fails_with(1);
    assert!(
        run.stderr.starts_with("mistify: GET /guests failed"),
        "{run}"
    );
    assert!(run.stderr.contains(&port.to_string()), "{run}");
}
