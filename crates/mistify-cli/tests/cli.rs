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
    fake: Daemon,
    dir: TempDir,
}

impl Stack {
    /// `config/agent.dev.json` pointed at a fresh fake; `reboot_method` replaces the
    /// method of the `reboot` action.
    fn start(name: &str, reboot_method: Option<&str>) -> Stack {
        Stack::start_with(name, &[], |config| {
            if let Some(method) = reboot_method {
                config["actions"]["reboot"]["stages"][0]["method"] = method.into();
            }
        })
    }

    /// As [`Stack::start`], the fake started with `fake_args` too and the agent's
    /// configuration changed by `edit`.
    fn start_with(name: &str, fake_args: &[&str], edit: impl FnOnce(&mut Value)) -> Stack {
        let dir = TempDir::new(name);
        let fake_port = free_port();
        let mut args: Vec<String> = vec![
            "--port".into(),
            fake_port.to_string(),
            "--log-level".into(),
            "warn".into(),
        ];
        args.extend(fake_args.iter().map(|a| a.to_string()));
        let fake = Daemon::start(&example("test-rpc-service"), &args, fake_port);

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
        edit(&mut config);
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
        Stack { agent, fake, dir }
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

    /// Asserts exit status 0; the run (stderr may hold warnings).
    fn succeeds(self) -> Run {
        assert_eq!(self.code, Some(0), "`mistify {}`: {}", self.args, self);
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

/// The lines of `text`.
fn lines(text: &str) -> Vec<&str> {
    text.lines().collect()
}

/// Whether `s` looks like a UUID (8-4-4-4-12 hex digits).
fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
        && parts
            .iter()
            .all(|p| p.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[test]
fn jobs_cancel_a_queued_job_but_not_a_running_one() {
    // Each guest action takes 1.5 s at the fake: the create runs while the reboot waits.
    let stack = Stack::start_with("cancel", &["--delay-ms", "1500"], |_| {});
    let id = guest_id();
    let create = stack
        .run(&[
            "--json", "guests", "create", "--id", &id, "--memory", "512", "--cpu", "1",
        ])
        .ok();
    let create_job = create.json()["ID"].as_str().expect("job id").to_string();
    let reboot = stack.run(&["-q", "guests", "reboot", &id]).ok();
    let reboot_job = reboot.stdout.trim().to_string();

    let cancel = stack.run(&["jobs", "cancel", &reboot_job]).ok();
    let row = &rows(&cancel.stdout)[0];
    assert_eq!(
        &row[..4],
        [reboot_job.as_str(), id.as_str(), "reboot", "Error"]
    );
    assert!(cancel.stdout.contains("cancel"), "{cancel}");

    // The create runs (or has ended): 409, exit 1, the agent's reason on stderr.
    let refused = stack.run(&["jobs", "cancel", &create_job]).fails_with(1);
    assert!(
        refused.stderr.starts_with("mistify: agent answered 409: "),
        "{refused}"
    );
    assert!(
        refused.stderr.contains("can no longer be cancelled"),
        "{refused}"
    );
    assert_eq!(refused.stdout, "", "{refused}");
    let missing = stack.run(&["jobs", "cancel", "no-such-job"]).fails_with(1);
    assert!(missing.stderr.contains("404"), "{missing}");
}

#[test]
fn guest_metrics_as_tables_json_and_ids() {
    let stack = Stack::start("metrics", None);
    let id = stack.create_guest();

    let all = stack.run(&["guests", "metrics", &id]).ok();
    let tables: Vec<&str> = all.stdout.split("\n\n").collect();
    assert_eq!(tables.len(), 3, "{all}");
    assert!(tables[0].starts_with("CPU "), "{all}");
    assert_eq!(rows(tables[0])[0], ["0", "0.000s", "0.000s"], "{all}");
    assert!(tables[1].starts_with("DISK "), "{all}");
    assert_eq!(rows(tables[1])[0][..3], ["vda", "0", "0B"], "{all}");
    assert!(tables[2].starts_with("NIC "), "{all}");
    assert_eq!(rows(tables[2])[0][..2], ["net0", "0B"], "{all}");

    let json = stack.run(&["--json", "guests", "metrics", &id]).ok().json();
    assert_eq!(json["cpu"].as_array().map(Vec::len), Some(1), "{json}");
    assert_eq!(json["disk"]["vda"]["disk"], "vda", "{json}");
    assert_eq!(json["nic"]["net0"]["name"], "net0", "{json}");

    let disk = stack
        .run(&["guests", "metrics", &id, "disk", "--json"])
        .ok();
    assert_eq!(disk.json()["vda"]["disk"], "vda", "{disk}");
    let cpu = stack.run(&["guests", "metrics", &id, "cpu"]).ok();
    assert!(cpu.stdout.starts_with("CPU "), "{cpu}");
    assert!(!cpu.stdout.contains("DISK"), "{cpu}");
    let nic = stack.run(&["-q", "guests", "metrics", &id, "nic"]).ok();
    assert_eq!(nic.stdout, "net0\n");

    let bad = stack.run(&["guests", "metrics", &id, "gpu"]).fails_with(2);
    assert!(bad.stderr.contains("gpu"), "{bad}");
    let missing = stack.run(&["guests", "metrics", &guest_id()]).fails_with(1);
    assert!(missing.stderr.contains("not found"), "{missing}");
}

#[test]
fn guest_get_refresh_asks_the_sub_agents() {
    // The dev configuration has no `status` action: the fake's echo stands for one.
    let stack = Stack::start_with("refresh", &[], |config| {
        config["actions"]["status"] = serde_json::json!({
            "stages": [{"service": "test", "method": "Test.Run"}]
        });
    });
    let id = stack.create_guest();
    let fresh = stack
        .run(&["--json", "guests", "get", &id, "--refresh"])
        .ok();
    assert_eq!(fresh.json()["id"], id.as_str(), "{fresh}");
    assert_eq!(fresh.json()["memory"], 512, "{fresh}");
    let table = stack.run(&["guests", "get", "--refresh", &id]).ok();
    assert!(table.stdout.contains(&id), "{table}");

    // Without a `status` action the agent cannot refresh: the flag reached it.
    let plain = Stack::start("refresh-none", None);
    let id = plain.create_guest();
    plain.run(&["guests", "get", &id]).ok();
    let refused = plain
        .run(&["guests", "get", &id, "--refresh"])
        .fails_with(1);
    assert!(
        refused.stderr.starts_with("mistify: agent answered "),
        "{refused}"
    );
    assert!(refused.stderr.contains("status"), "{refused}");
}

#[test]
fn health_prints_the_report_and_exits_1_when_degraded() {
    let mut stack = Stack::start("health", None);
    let ok = stack.run(&["health"]).ok();
    let first = ok.stdout.lines().next().unwrap_or_default();
    assert!(first.starts_with("status: ok (agent "), "{ok}");
    let services = rows(ok.stdout.split_once('\n').map(|x| x.1).unwrap_or_default());
    let names: Vec<&str> = services.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(names, ["test", "testDownload"], "{ok}");
    for row in &services {
        assert_eq!(row[2], "yes", "{ok}");
        assert!(row[3].ends_with("ms"), "{ok}");
    }
    let json = stack.run(&["--json", "health"]).ok().json();
    assert_eq!(json["status"], "ok");
    assert_eq!(stack.run(&["-q", "health"]).ok().stdout, "");

    // The sub-agent goes: the agent answers 503, the report is still printed.
    stack.fake.kill_hard();
    let degraded = stack.run(&["health"]).fails_with(1);
    let first = degraded.stdout.lines().next().unwrap_or_default();
    assert!(first.starts_with("status: degraded"), "{degraded}");
    assert!(
        first.contains("not answering: test, testDownload"),
        "{degraded}"
    );
    assert!(first.contains("guest actions cannot run"), "{degraded}");
    let services = rows(
        degraded
            .stdout
            .split_once('\n')
            .map(|x| x.1)
            .unwrap_or_default(),
    );
    assert_eq!(services.len(), 2, "{degraded}");
    assert!(services.iter().all(|r| r[2] == "no"), "{degraded}");
    assert!(
        degraded
            .stderr
            .starts_with("mistify: the agent is degraded: sub-agents not answering: test"),
        "{degraded}"
    );
    let json = stack.run(&["--json", "health"]).fails_with(1).json();
    assert_eq!(json["status"], "degraded");
    assert_eq!(json["serves_guests"], false);
}

#[test]
fn forced_delete_removes_a_guest_whose_stage_fails_and_says_so() {
    let stack = Stack::start_with("force", &[], |config| {
        config["actions"]["delete"]["stages"][0]["method"] = "Test.Nope".into();
    });
    let id = stack.create_guest();
    let plain = stack
        .run(&["guests", "delete", &id, "--wait"])
        .fails_with(1);
    assert!(plain.stderr.contains("(delete) failed"), "{plain}");
    stack.run(&["guests", "get", &id]).ok();

    let forced = stack
        .run(&["guests", "delete", &id, "--force", "--wait"])
        .succeeds();
    let job = &rows(&forced.stdout)[0];
    assert_eq!(&job[1..4], [id.as_str(), "delete", "Complete"], "{forced}");
    assert!(
        forced.stderr.starts_with(&format!(
            "mistify: warning: guest {id} deleted; what may be left behind: forced: stage 1 of 1 (test Test.Nope)"
        )),
        "{forced}"
    );
    let gone = stack.run(&["guests", "get", &id]).fails_with(1);
    assert!(gone.stderr.contains("not found"), "{gone}");

    // Without --wait: the job id with -q, nothing on stderr.
    let other = stack.create_guest();
    let queued = stack
        .run(&["-q", "guests", "delete", "--force", &other])
        .ok();
    let job_id = queued.stdout.trim();
    let done = stack.run(&["jobs", "wait", job_id]).ok();
    assert!(done.stdout.contains("Complete"), "{done}");
}

#[test]
fn quiet_prints_only_ids() {
    let stack = Stack::start("quiet", None);
    // `guests create` prints the new guest's id, with --wait too.
    let created = stack
        .run(&[
            "-q", "guests", "create", "--memory", "256", "--cpu", "1", "--wait",
        ])
        .ok();
    let id = created.stdout.trim().to_string();
    assert!(is_uuid(&id), "{created}");
    assert_eq!(created.stdout, format!("{id}\n"));
    let second = stack
        .run(&[
            "guests", "create", "--memory", "256", "--cpu", "1", "--quiet",
        ])
        .ok();
    let second = second.stdout.trim().to_string();
    assert!(is_uuid(&second) && second != id);
    stack.run(&["jobs", "list", "--guest", &second]).ok();

    // A job-producing command: the job, or the guest after --wait.
    let job = stack.run(&["-q", "guests", "reboot", &id]).ok();
    let job = job.stdout.trim().to_string();
    let shown = stack.run(&["jobs", "wait", &job]).ok();
    assert_eq!(
        rows(&shown.stdout)[0][..3],
        [job.as_str(), id.as_str(), "reboot"]
    );
    let waited = stack.run(&["-q", "guests", "reboot", &id, "--wait"]).ok();
    assert_eq!(waited.stdout, format!("{id}\n"));
    assert_eq!(
        stack.run(&["-q", "jobs", "get", &job]).ok().stdout,
        format!("{job}\n")
    );
    assert_eq!(
        stack.run(&["-q", "jobs", "wait", &job]).ok().stdout,
        format!("{job}\n")
    );

    // Lists: one id per line.
    let mut listed = lines(&stack.run(&["-q", "guests", "list"]).ok().stdout)
        .into_iter()
        .map(str::to_string)
        .collect::<Vec<_>>();
    listed.sort();
    let mut both = vec![id.clone(), second.clone()];
    both.sort();
    assert_eq!(listed, both);
    let jobs = stack.run(&["-q", "jobs", "list", "--guest", &id]).ok();
    assert!(lines(&jobs.stdout).contains(&job.as_str()), "{jobs}");
    assert_eq!(
        stack.run(&["-q", "guests", "get", &id]).ok().stdout,
        format!("{id}\n")
    );

    const IMAGE: &str = "289120e4-ed12-431d-8d18-48f8a94bb05a";
    assert_eq!(
        stack.run(&["-q", "images", "list"]).ok().stdout,
        format!("{IMAGE}\n")
    );
    for wait in [false, true] {
        let mut args = vec![
            "-q",
            "images",
            "fetch",
            IMAGE,
            "--source",
            "http://example.invalid/i",
        ];
        if wait {
            args.push("--wait");
        }
        assert_eq!(stack.run(&args).ok().stdout, format!("{IMAGE}\n"));
    }
    let delete = stack.run(&["-q", "images", "delete", IMAGE]).ok();
    assert_ne!(delete.stdout.trim(), IMAGE, "{delete}");
    stack.run(&["jobs", "wait", delete.stdout.trim()]).ok();
    let delete = stack.run(&["-q", "images", "delete", IMAGE, "--wait"]).ok();
    assert_eq!(delete.stdout, format!("{IMAGE}\n"));

    let snap = stack
        .run(&["-q", "snapshots", "create", &id, "--name", "s1", "--wait"])
        .ok();
    assert_eq!(snap.stdout, format!("{id}\n"));
    let snaps = stack.run(&["-q", "snapshots", "list", &id]).ok();
    assert_eq!(lines(&snaps.stdout).len(), 1, "{snaps}");
    assert!(snaps.stdout.starts_with("mistify/"), "{snaps}");

    stack.run(&["metadata", "set", "b=2", "a=1"]).ok();
    assert_eq!(stack.run(&["-q", "metadata", "get"]).ok().stdout, "a\nb\n");

    // -q and --json do not go together.
    let both = stack.run(&["-q", "--json", "guests", "list"]).fails_with(2);
    assert!(both.stderr.contains("cannot be used with"), "{both}");
}

/// A one-shot HTTP server on a free port: answers the first request with `response` and
/// hands back the request's head.
fn one_answer(response: &'static str) -> (String, std::thread::JoinHandle<String>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let handle = std::thread::spawn(move || {
        let (stream, _) = listener.accept().expect("accept");
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let mut head = String::new();
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
            head.push_str(&line);
        }
        let mut body = vec![0; length];
        std::io::Read::read_exact(&mut reader, &mut body).expect("body");
        let mut stream = stream;
        stream.write_all(response.as_bytes()).expect("answer");
        head
    });
    (url, handle)
}

#[test]
fn bodies_go_strict_and_warnings_reach_stderr() {
    // A real agent never warns a strict request (its bodies have no unknown keys), so
    // a one-shot server stands in for one that does.
    let body = r#"{"id":"5a0c9e2e-1111-4222-8333-444455556666","state":"create"}"#;
    let response: &'static str = Box::leak(
        format!(
            "HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\n\
             warning: 299 - \"unknown field \\\"macc\\\"\"\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_boxed_str(),
    );
    let (url, server) = one_answer(response);
    let output = Command::new(env!("CARGO_BIN_EXE_mistify"))
        .args([
            "--agent", &url, "-q", "guests", "create", "--memory", "1", "--cpu", "1",
        ])
        .output()
        .expect("run mistify");
    let run = Run::from(&["guests", "create"], output).succeeds();
    let head = server.join().expect("server");
    assert!(
        head.starts_with("POST /guests?fieldValidation=Strict HTTP/1.1"),
        "{head}"
    );
    assert_eq!(
        run.stdout, "5a0c9e2e-1111-4222-8333-444455556666\n",
        "{run}"
    );
    assert_eq!(
        run.stderr, "mistify: warning: unknown field \"macc\"\n",
        "{run}"
    );

    // Against the real agent the strict bodies pass: create, metadata, snapshots.
    let stack = Stack::start("strict", None);
    let id = stack.create_guest();
    stack.run(&["metadata", "set", "--guest", &id, "k=v"]).ok();
    stack
        .run(&["snapshots", "create", &id, "--name", "s", "--wait"])
        .ok();
    stack
        .run(&["snapshots", "rollback", &id, "s", "--wait"])
        .ok();
}

#[test]
fn download_progress_shows_the_total_from_the_listing() {
    // Progress is drawn only on a terminal: run under script(1) for a pseudo-terminal.
    let stack = Stack::start("progress", None);
    let id = stack.create_guest();
    stack
        .run(&["snapshots", "create", &id, "--name", "s1", "--wait"])
        .ok();
    let file = stack.dir.path().join("snap.bin");
    let command = format!(
        "'{}' --agent '{}' snapshots download {id} s1 -o '{}'",
        env!("CARGO_BIN_EXE_mistify"),
        stack.agent.url(),
        file.display()
    );
    let output = Command::new("script")
        .args(["-qefc", &command, "/dev/null"])
        .env("TERM", "xterm")
        .output()
        .expect("run script(1)");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    // The fake lists the snapshot at 1024 MB; the agent streams without a length.
    assert!(
        text.contains("/1.00 GiB"),
        "no total in the progress bar: {text:?}"
    );
    assert_eq!(std::fs::read_to_string(&file).expect("file"), "foobar");

    // Not a terminal: nothing on stderr.
    let file_arg = file.display().to_string();
    stack
        .run(&["snapshots", "download", &id, "s1", "-o", &file_arg])
        .ok();
}

#[test]
fn completions_and_man_page() {
    let run = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_mistify"))
            .env("MISTIFY_AGENT", "http://127.0.0.1:1")
            .args(args)
            .output()
            .expect("run mistify");
        Run::from(args, output).ok()
    };
    let bash = run(&["completions", "bash"]);
    assert!(bash.stdout.contains("_mistify()"), "{bash}");
    assert!(bash.stdout.contains("complete -F _mistify"), "{bash}");
    for word in [
        "guests", "metrics", "cancel", "health", "--quiet", "--force",
    ] {
        assert!(bash.stdout.contains(word), "{word} not completed: {bash}");
    }
    // The script is valid bash.
    let check = Command::new("bash")
        .args(["-n", "-c", &bash.stdout])
        .output()
        .expect("bash -n");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let zsh = run(&["completions", "zsh"]);
    assert!(zsh.stdout.starts_with("#compdef mistify"), "{zsh}");
    let fish = run(&["completions", "fish"]);
    assert!(fish.stdout.contains("complete -c mistify"), "{fish}");
    let bad = Command::new(env!("CARGO_BIN_EXE_mistify"))
        .args(["completions", "tcsh"])
        .output()
        .expect("run mistify");
    assert_eq!(bad.status.code(), Some(2));

    let man = run(&["man"]);
    assert!(man.stdout.contains(".TH mistify 1"), "{man}");
    for section in [
        "NAME",
        "SYNOPSIS",
        "OPTIONS",
        "COMMANDS",
        "EXIT STATUS",
        "ENVIRONMENT",
    ] {
        assert!(
            man.stdout.contains(&format!(".SH {section}"))
                || man.stdout.contains(&format!(".SH \"{section}\"")),
            "no {section} section: {man}"
        );
    }
    for command in [
        "mistify guests metrics",
        "mistify jobs cancel",
        "mistify health",
    ] {
        let roff = command.replace('-', "\\-");
        assert!(
            man.stdout.contains(&roff),
            "{command} not in the page: {man}"
        );
    }
    // It renders without a warning, when man(1) is there to render it.
    if let Ok(out) = Command::new("man")
        .args(["--warnings", "-l", "-"])
        .env("MANWIDTH", "80")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(man.stdout.as_bytes())?;
            child.wait_with_output()
        })
    {
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains("jobs cancel"), "{text}");
        assert_eq!(String::from_utf8_lossy(&out.stderr), "", "man --warnings");
    }
}
