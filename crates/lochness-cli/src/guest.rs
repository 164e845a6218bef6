//! `lochness guest …` (the original `guest` CLI, plus `get`, flags for `create`, filters
//! and `--wait`).

use std::time::Duration;

use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use lochness_client::{Guest, GuestAction, GuestJob, Job, JobStatus};
use serde_json::{Map, Value};

use crate::entity::{self, Body, IdsArg, PageArgs, PairsArg};
use crate::input::{self, Lines};
use crate::output::{self, Format};
use crate::{CliError, Ctx, FailedJob};

#[derive(Debug, Subcommand)]
pub enum GuestCmd {
    /// List guests (`ID HYPERVISOR IP FLAVOR NETWORK`), or the ones named.
    List(GuestList),
    /// Show guests in detail, with where they were placed (hypervisor, subnet, ip,
    /// bridge).
    Get(IdsArg),
    /// Create guests from JSON specs, or one from the flags; prints the job that places
    /// each.
    Create(GuestCreate),
    /// Change guests: `(<id> <spec>)…` (placement members are refused by cguestd).
    Modify(PairsArg),
    /// Delete guests (a `delete` job each).
    Delete(ActionArgs),
    /// Shut guests down.
    Shutdown(ActionArgs),
    /// Reboot guests.
    Reboot(ActionArgs),
    /// Restart guests.
    Restart(ActionArgs),
    /// Power guests off.
    Poweroff(ActionArgs),
    /// Start guests.
    Start(ActionArgs),
    /// Suspend guests.
    Suspend(ActionArgs),
    /// Show jobs (`ID ACTION GUEST STATUS STARTED FINISHED ERROR`).
    Job(JobArgs),
}

#[derive(Debug, Args)]
pub struct GuestList {
    /// Show these only (or one per line on stdin); default: all.
    #[arg(value_name = "ID")]
    pub ids: Vec<String>,
    /// Only the guests placed on this hypervisor.
    #[arg(long, value_name = "UUID")]
    pub hypervisor: Option<String>,
    /// Only the guests of this network.
    #[arg(long, value_name = "UUID")]
    pub network: Option<String>,
    /// Only the guests with an address of this subnet.
    #[arg(long, value_name = "UUID")]
    pub subnet: Option<String>,
    /// Only the guests of this flavor.
    #[arg(long, value_name = "UUID")]
    pub flavor: Option<String>,
    /// Only the guests of this firewall group.
    #[arg(long, value_name = "UUID")]
    pub fwgroup: Option<String>,
    #[command(flatten)]
    pub page: PageArgs,
}

#[derive(Debug, Args)]
pub struct GuestCreate {
    /// JSON specs, e.g. `{"flavor":"…","network":"…"}` (or one per line on stdin).
    #[arg(value_name = "SPEC")]
    pub specs: Vec<String>,
    /// The flavor (with --network: create one guest from flags).
    #[arg(long, value_name = "UUID")]
    pub flavor: Option<String>,
    /// The network.
    #[arg(long, value_name = "UUID")]
    pub network: Option<String>,
    /// The firewall group.
    #[arg(long, value_name = "UUID")]
    pub fwgroup: Option<String>,
    /// The VLAN group.
    #[arg(long, value_name = "UUID")]
    pub vlangroup: Option<String>,
    /// The guest type handed to the agent (e.g. `kvm`).
    #[arg(long = "type", value_name = "TYPE")]
    pub kind: Option<String>,
    /// The guest's id (default: cguestd picks one).
    #[arg(long, value_name = "UUID")]
    pub id: Option<String>,
    /// A metadata entry; repeat for more.
    #[arg(long, value_name = "KEY=VALUE", value_parser = input::key_value)]
    pub metadata: Vec<(String, String)>,
    /// Wait until each guest is placed and created (a spinner on stderr), then print its
    /// job; exit 1 when one ends in error.
    #[arg(long)]
    pub wait: bool,
}

#[derive(Debug, Args)]
pub struct ActionArgs {
    /// Guest ids (or one per line on stdin).
    #[arg(value_name = "ID")]
    pub ids: Vec<String>,
    /// Wait for each job to end (a spinner on stderr), then print it; exit 1 when one
    /// ends in error.
    #[arg(long)]
    pub wait: bool,
}

#[derive(Debug, Args)]
pub struct JobArgs {
    /// Job ids (or one per line on stdin).
    #[arg(value_name = "JOB")]
    pub ids: Vec<String>,
    /// Wait for each job to end; exit 1 when one ends in error.
    #[arg(long)]
    pub wait: bool,
}

impl GuestCreate {
    /// The body the flags describe, `None` when no flag was given.
    fn flags(&self) -> Result<Option<Map<String, Value>>, CliError> {
        let body = Body::default()
            .text("id", &entity::opt_uuid("guest id", &self.id)?)
            .text("flavor", &entity::opt_uuid("flavor id", &self.flavor)?)
            .text("network", &entity::opt_uuid("network id", &self.network)?)
            .text(
                "fwgroup",
                &entity::opt_uuid("firewall group id", &self.fwgroup)?,
            )
            .text(
                "vlangroup",
                &entity::opt_uuid("VLAN group id", &self.vlangroup)?,
            )
            .text("type", &self.kind)
            .metadata(&self.metadata)
            .given();
        if body.is_some() && (self.flavor.is_none() || self.network.is_none()) {
            return Err(CliError::Usage(
                "a guest created from flags needs --flavor and --network".into(),
            ));
        }
        Ok(body)
    }
}

pub async fn run(ctx: &Ctx, cmd: GuestCmd) -> Result<(), CliError> {
    let (action, args) = match cmd {
        GuestCmd::List(a) => {
            let mut filters = Vec::new();
            for (key, value) in [
                ("hypervisor", &a.hypervisor),
                ("network", &a.network),
                ("subnet", &a.subnet),
                ("flavor", &a.flavor),
                ("fwgroup", &a.fwgroup),
            ] {
                if let Some(value) = value {
                    filters.push((key.to_string(), input::uuid(key, value)?));
                }
            }
            return entity::list::<Guest>(ctx, a.ids, &a.page, filters).await;
        }
        GuestCmd::Get(a) => return entity::get::<Guest>(ctx, a.ids).await,
        GuestCmd::Create(a) => {
            let flags = a.flags()?;
            let bodies = entity::bodies(a.specs, flags)?;
            let (started, error) = entity::each(bodies, |body| async move {
                ctx.client.create_guest(&body).await
            })
            .await;
            return after_start(ctx, "create", started, error, a.wait).await;
        }
        GuestCmd::Modify(a) => return entity::modify::<Guest>(ctx, a.args).await,
        GuestCmd::Job(a) => return jobs(ctx, a).await,
        GuestCmd::Delete(a) => (None, a),
        GuestCmd::Shutdown(a) => (Some(GuestAction::Shutdown), a),
        GuestCmd::Reboot(a) => (Some(GuestAction::Reboot), a),
        GuestCmd::Restart(a) => (Some(GuestAction::Restart), a),
        GuestCmd::Poweroff(a) => (Some(GuestAction::Poweroff), a),
        GuestCmd::Start(a) => (Some(GuestAction::Start), a),
        GuestCmd::Suspend(a) => (Some(GuestAction::Suspend), a),
    };
    let ids = input::uuids(
        "guest id",
        &input::required(args.ids, Lines::FirstSpace, "guest ids")?,
    )?;
    let (started, error) = entity::each(ids, |id| async move {
        match action {
            Some(action) => ctx.client.guest_action(&id, action).await,
            None => ctx.client.delete_guest(&id).await,
        }
    })
    .await;
    let name = action.map_or("delete", GuestAction::as_str);
    after_start(ctx, name, started, error, args.wait).await
}

/// After jobs were queued: prints them (`{"id":<job>,"guest":{…}}` with `-j`, the job
/// ids in plain mode), or with `wait` follows each to its end and prints the final job.
async fn after_start(
    ctx: &Ctx,
    action: &str,
    started: Vec<GuestJob>,
    error: Option<CliError>,
    wait: bool,
) -> Result<(), CliError> {
    if !wait {
        let text = match ctx.format {
            Format::Json => crate::json_lines(&started)?,
            Format::Plain => started.iter().map(|s| format!("{}\n", s.id)).collect(),
            Format::Table if started.is_empty() => String::new(),
            Format::Table => output::started_table(action, &started),
        };
        ctx.print(&text)?;
        return entity::finish(error);
    }
    let ids: Vec<String> = started.iter().map(|s| s.id.clone()).collect();
    let waited = wait_all(ctx, &ids).await;
    if action == "create" && ctx.format == Format::Table {
        // Where the new guests went.
        let done: Vec<String> = waited
            .jobs
            .iter()
            .filter(|j| j.status == JobStatus::Done)
            .map(|j| j.guest.clone())
            .collect();
        let (guests, fetch_error) =
            entity::each(done, |id| async move { ctx.client.get::<Guest>(&id).await }).await;
        if !guests.is_empty() {
            ctx.print("\n")?;
            ctx.print(&output::list_table(&guests))?;
        }
        if let Some(e) = fetch_error {
            eprintln!("error: {}", crate::message_of(&e));
        }
    }
    waited.finish(error)
}

/// `guest job <id>…`: each job as it stands, or with `--wait` once it has ended.
async fn jobs(ctx: &Ctx, args: JobArgs) -> Result<(), CliError> {
    let ids = input::uuids(
        "job id",
        &input::required(args.ids, Lines::FirstSpace, "job ids")?,
    )?;
    if args.wait {
        return wait_all(ctx, &ids).await.finish(None);
    }
    let (jobs, error) = entity::each(ids, |id| async move { ctx.client.get_job(&id).await }).await;
    print_jobs(ctx, &jobs)?;
    entity::finish(error)
}

fn print_jobs(ctx: &Ctx, jobs: &[Job]) -> Result<(), CliError> {
    let text = match ctx.format {
        Format::Json => crate::json_lines(jobs)?,
        Format::Plain => jobs.iter().map(|j| format!("{}\n", j.id)).collect(),
        Format::Table if jobs.is_empty() => String::new(),
        Format::Table => output::jobs_table(jobs),
    };
    ctx.print(&text)
}

/// What waiting for jobs came to.
struct Waited {
    /// The jobs that ended, in order (printed).
    jobs: Vec<Job>,
    /// Those that ended in `error`.
    failed: Vec<FailedJob>,
    /// Why waiting stopped early (a daemon error, the wait timeout).
    error: Option<CliError>,
}

impl Waited {
    /// The first error: `earlier` (queuing the jobs stopped), else the wait's own, else
    /// the failed jobs.
    fn finish(self, earlier: Option<CliError>) -> Result<(), CliError> {
        if let Some(e) = earlier.or(self.error) {
            for failed in &self.failed {
                eprintln!("error: {failed}");
            }
            return Err(e);
        }
        if self.failed.is_empty() {
            Ok(())
        } else {
            Err(CliError::JobsFailed(self.failed))
        }
    }
}

fn spinner() -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// Follows each job in turn to its end (a spinner on stderr shows its action and
/// status), printing each one as it ends (in table mode: all of them at the end).
async fn wait_all(ctx: &Ctx, ids: &[String]) -> Waited {
    let mut waited = Waited {
        jobs: Vec::new(),
        failed: Vec::new(),
        error: None,
    };
    for id in ids {
        let bar = spinner();
        bar.set_message(format!("job {id}: waiting"));
        let result = ctx
            .client
            .wait_job_with(id, ctx.wait_timeout, |job| {
                bar.set_message(format!(
                    "job {id} ({} of guest {}): {}",
                    job.action, job.guest, job.status
                ));
            })
            .await;
        bar.finish_and_clear();
        let job = match result {
            Ok(job) => job,
            Err(e) => {
                waited.error = Some(e.into());
                break;
            }
        };
        // Scripts see each job as it ends; a table comes once, at the end.
        if ctx.format != Format::Table {
            if let Err(e) = print_jobs(ctx, std::slice::from_ref(&job)) {
                waited.error = Some(e);
                break;
            }
        }
        if job.status == JobStatus::Error {
            waited.failed.push(FailedJob {
                id: job.id.clone(),
                action: job.action.to_string(),
                guest: job.guest.clone(),
                reason: job.error.clone(),
            });
        }
        waited.jobs.push(job);
    }
    if ctx.format == Format::Table {
        if let Err(e) = print_jobs(ctx, &waited.jobs) {
            waited.error.get_or_insert(e);
        }
    }
    waited
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Cli;
    use clap::Parser;

    fn create_args(args: &[&str]) -> GuestCreate {
        let mut all = vec!["lochness", "guest", "create"];
        all.extend_from_slice(args);
        match Cli::try_parse_from(all).unwrap().command {
            crate::Command::Guest(GuestCmd::Create(a)) => a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn create_flags() {
        let flavor = "dddd0001-4444-4444-8444-000000000001";
        let network = "CCCC0001-3333-4333-8333-000000000001";
        let a = create_args(&[
            "--flavor",
            flavor,
            "--network",
            network,
            "--metadata",
            "owner=bob",
            "--metadata",
            "team=",
            "--wait",
        ]);
        assert!(a.wait);
        assert_eq!(
            Value::Object(a.flags().unwrap().unwrap()),
            serde_json::json!({
                "flavor": flavor,
                "network": network.to_ascii_lowercase(),
                "metadata": {"owner": "bob", "team": ""}
            })
        );
        let a = create_args(&["--flavor", flavor]);
        assert_eq!(a.flags().unwrap_err().exit_code(), 2);
        let a = create_args(&["--flavor", "small", "--network", network]);
        assert!(a.flags().unwrap_err().to_string().contains("flavor id"));
        let a = create_args(&[r#"{"flavor":"x"}"#]);
        assert_eq!(a.flags().unwrap(), None);
    }

    #[test]
    fn failed_jobs_are_reported() {
        let failed = FailedJob {
            id: "j".into(),
            action: "select-hypervisor".into(),
            guest: "g".into(),
            reason: "unable to select candidate g - no suitable hypervisors".into(),
        };
        let waited = Waited {
            jobs: Vec::new(),
            failed: vec![failed.clone()],
            error: None,
        };
        let e = waited.finish(None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "job j (select-hypervisor of guest g) failed: unable to select candidate g - no suitable hypervisors"
        );
        assert_eq!(e.exit_code(), 1);
        let waited = Waited {
            jobs: Vec::new(),
            failed: Vec::new(),
            error: None,
        };
        assert!(waited.finish(None).is_ok());
    }
}
