//! Places guests on a synthetic cluster and reports throughput and etcd round trips.
//!
//! ```sh
//! cargo run --release -p lochness --example place -- --etcd http://127.0.0.1:2379 \
//!     --hypervisors 1000 --guests 10000 --placers 16
//! ```
//!
//! Builds its own topology under a fresh key prefix: one network; four /20 subnets, each
//! on a quarter of the hypervisors (bridge `br0`); every hypervisor with 65,536 MiB
//! memory, 1 TiB disk and 64 CPUs, alive; one flavor of 512 MiB, 4,096 MiB disk, 1 CPU.
//! Placers share a cluster view kept current by a watch. Afterwards every address key
//! and guest is read back to count duplicate addresses, and etcd's own `/metrics`
//! (unary gRPC requests handled) give the round trips per placement.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use futures::stream::{self, StreamExt};
use lochness::{ClusterView, Context, Error, Resources, DEFAULT_CANDIDATE_FUNCTIONS};
use tokio::sync::RwLock;

#[derive(Parser, Debug)]
struct Args {
    /// etcd client URL.
    #[arg(long, default_value = "http://127.0.0.1:2379")]
    etcd: String,
    /// Number of hypervisors.
    #[arg(long, default_value_t = 1000)]
    hypervisors: usize,
    /// Number of guests to place.
    #[arg(long, default_value_t = 10000)]
    guests: usize,
    /// Concurrent placers.
    #[arg(long, default_value_t = 16)]
    placers: usize,
    /// Key prefix (default: a fresh one per run).
    #[arg(long)]
    prefix: Option<String>,
}

const SUBNETS: usize = 4;

/// Unary gRPC requests etcd has handled so far.
async fn round_trips(
    http: &reqwest::Client,
    etcd: &str,
) -> Result<u64, Box<dyn std::error::Error>> {
    let text = http
        .get(format!("{}/metrics", etcd.trim_end_matches('/')))
        .send()
        .await?
        .text()
        .await?;
    Ok(text
        .lines()
        .filter(|l| {
            l.starts_with("grpc_server_handled_total{") && l.contains("grpc_type=\"unary\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let prefix = args
        .prefix
        .clone()
        .unwrap_or_else(|| format!("place-{}/", lochness::codec::new_id()));
    let ctx = Context::new(&[args.etcd.as_str()], Some(&prefix)).await?;
    println!(
        "prefix {prefix}: building {} hypervisors, {SUBNETS} subnets",
        args.hypervisors
    );

    let setup = Instant::now();
    let mut flavor = ctx.new_flavor();
    flavor.image = lochness::codec::new_id();
    flavor.resources = Resources {
        memory: 512,
        disk: 4096,
        cpu: 1,
    };
    flavor.save().await?;
    let mut network = ctx.new_network();
    network.save().await?;
    let mut subnets = Vec::new();
    for i in 0..SUBNETS {
        let mut s = ctx.new_subnet();
        s.cidr = Some(lochness::codec::parse_cidr(&format!(
            "10.{}.0.0/20",
            16 + i
        ))?);
        s.start_range = Some(format!("10.{}.0.10", 16 + i).parse()?);
        s.end_range = Some(format!("10.{}.15.250", 16 + i).parse()?);
        s.gateway = Some(format!("10.{}.0.1", 16 + i).parse()?);
        s.save().await?;
        network.add_subnet(&mut s).await?;
        subnets.push(s);
    }
    let subnets = Arc::new(subnets);
    let res = Resources {
        memory: 65536,
        disk: 1 << 20,
        cpu: 64,
    };
    let made: Vec<Result<(), Error>> = stream::iter(0..args.hypervisors)
        .map(|i| {
            let ctx = ctx.clone();
            let subnets = subnets.clone();
            async move {
                let mut h = ctx.new_hypervisor();
                h.ip = Some(
                    format!("172.16.{}.{}", i / 250, i % 250 + 1)
                        .parse()
                        .map_err(|_| Error::Invalid("ip".into()))?,
                );
                h.total_resources = res;
                h.available_resources = res;
                h.save().await?;
                h.add_subnet(&subnets[i * SUBNETS / args.hypervisors.max(1)], "br0")
                    .await?;
                ctx.client()
                    .put(
                        ctx.abs(&lochness::keys::hypervisor_heartbeat(&h.id)),
                        lochness::codec::go_time_now(),
                        None,
                    )
                    .await?;
                Ok(())
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    for r in made {
        r?;
    }
    println!("topology ready in {:.1?}", setup.elapsed());

    // A shared view, kept current by a watch.
    let view = Arc::new(RwLock::new(ClusterView::load(&ctx).await?));
    let mut watcher = ctx
        .watch(lochness::keys::ROOT, view.read().await.revision)
        .await?;
    let feeder = {
        let (ctx, view) = (ctx.clone(), view.clone());
        tokio::spawn(async move {
            while let Some(Ok(first)) = watcher.next().await {
                // Apply the burst that has arrived under one write lock.
                let mut v = view.write().await;
                let mut next = Some(first);
                while let Some(ev) = next {
                    let value =
                        (ev.kind != lochness::ChangeKind::Delete).then_some(ev.value.as_slice());
                    v.apply(&ctx, &ev.key, value, ev.revision);
                    next = watcher.try_next().and_then(|r| r.ok());
                }
            }
        })
    };

    let http = reqwest::Client::new();
    let before = round_trips(&http, &args.etcd).await?;
    let start = Instant::now();
    let per = args.guests / args.placers.max(1);
    let mut tasks = Vec::new();
    for p in 0..args.placers {
        let count = if p + 1 == args.placers {
            args.guests - per * (args.placers - 1)
        } else {
            per
        };
        let (ctx, view, flavor, network) = (
            ctx.clone(),
            view.clone(),
            flavor.id.clone(),
            network.id.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut failures = 0usize;
            for _ in 0..count {
                let mut g = ctx.new_guest();
                g.flavor = flavor.clone();
                g.network = network.clone();
                let mut placed = false;
                for _ in 0..3 {
                    let candidate = {
                        let v = view.read().await;
                        g.candidates_in(&v, &DEFAULT_CANDIDATE_FUNCTIONS)
                            .ok()
                            .and_then(|c| c.first().map(|h| (*h).clone()))
                    };
                    let Some(mut h) = candidate else { break };
                    match h.add_guest(&mut g).await {
                        Ok(()) => {
                            placed = true;
                            break;
                        }
                        Err(e) => eprintln!("placement of {} on {} failed: {e}", g.id, h.id),
                    }
                }
                if !placed {
                    failures += 1;
                }
            }
            failures
        }));
    }
    let mut failures = 0;
    for t in tasks {
        failures += t.await?;
    }
    let elapsed = start.elapsed();
    let after = round_trips(&http, &args.etcd).await?;
    feeder.abort();
    let placed = args.guests - failures;

    // Read everything back.
    let mut by_ip: BTreeMap<String, usize> = BTreeMap::new();
    let mut mismatched = 0usize;
    let guests: BTreeMap<String, lochness::Guest> = ctx
        .guests()
        .await?
        .into_iter()
        .map(|g| (g.id.clone(), g))
        .collect();
    for s in subnets.iter() {
        let p = lochness::keys::subnet_addresses_prefix(&s.id);
        for kv in ctx.get_prefix(&p).await? {
            let ip = kv.key[p.len()..].to_string();
            *by_ip.entry(ip.clone()).or_default() += 1;
            if guests
                .get(&kv.text())
                .and_then(|g| g.ip)
                .map(|i| i.to_string())
                != Some(ip)
            {
                mismatched += 1;
            }
        }
    }
    let mut guest_ips: BTreeMap<String, usize> = BTreeMap::new();
    for g in guests.values() {
        if let Some(ip) = g.ip {
            *guest_ips.entry(ip.to_string()).or_default() += 1;
        }
    }
    let duplicates = guest_ips
        .values()
        .filter(|n| **n > 1)
        .map(|n| n - 1)
        .sum::<usize>()
        + by_ip.values().filter(|n| **n > 1).count();
    let trips = after.saturating_sub(before);
    println!(
        "placed {placed}/{} guests ({failures} failed) with {} placers in {:.2?}",
        args.guests, args.placers, elapsed
    );
    println!("placements/s: {:.0}", placed as f64 / elapsed.as_secs_f64());
    println!(
        "etcd round trips: {trips} ({:.2} per placement)",
        trips as f64 / placed.max(1) as f64
    );
    println!(
        "address keys: {}, duplicates: {duplicates}, keys not matching their guest: {mismatched}",
        by_ip.len()
    );
    if duplicates > 0 || mismatched > 0 || failures > 0 {
        std::process::exit(1);
    }
    Ok(())
}
