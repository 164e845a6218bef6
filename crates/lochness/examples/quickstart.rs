//! The crate-level example: a subnet in a network, a hypervisor on that subnet, and one
//! guest placed on it.
//!
//! ```sh
//! cargo run -p lochness --example quickstart -- http://127.0.0.1:2379
//! ```

use lochness::{Context, Resources, DEFAULT_CANDIDATE_FUNCTIONS};

/// Builds the small cluster under `prefix` on the etcd at `etcd` and places one guest;
/// returns the guest's address.
pub async fn run(etcd: &str, prefix: &str) -> lochness::Result<String> {
    let ctx = Context::new(&[etcd], Some(prefix)).await?;

    // A network with one subnet.
    let mut network = ctx.new_network();
    network.save().await?;
    let mut subnet = ctx.new_subnet();
    subnet.cidr = Some(lochness::codec::parse_cidr("192.168.100.0/24")?);
    subnet.start_range = Some(
        "192.168.100.10"
            .parse()
            .map_err(|_| lochness::Error::InvalidIp("start".into()))?,
    );
    subnet.end_range = Some(
        "192.168.100.200"
            .parse()
            .map_err(|_| lochness::Error::InvalidIp("end".into()))?,
    );
    subnet.gateway = Some(
        "192.168.100.1"
            .parse()
            .map_err(|_| lochness::Error::InvalidIp("gateway".into()))?,
    );
    subnet.save().await?;
    network.add_subnet(&mut subnet).await?;

    // A live hypervisor with room, bridged onto the subnet.
    let mut hv = ctx.new_hypervisor();
    hv.ip = Some(
        "10.0.0.5"
            .parse()
            .map_err(|_| lochness::Error::InvalidIp("ip".into()))?,
    );
    hv.total_resources = Resources {
        memory: 16384,
        disk: 1 << 20,
        cpu: 16,
    };
    hv.available_resources = hv.total_resources;
    hv.save().await?;
    hv.add_subnet(&subnet, "br0").await?;
    let beat = ctx
        .heartbeat(&hv.id, std::time::Duration::from_secs(10))
        .await?;

    // A flavor and a guest, placed on the best candidate.
    let mut flavor = ctx.new_flavor();
    flavor.image = "debian-12".into();
    flavor.resources = Resources {
        memory: 512,
        disk: 4096,
        cpu: 1,
    };
    flavor.save().await?;
    let mut guest = ctx.new_guest();
    guest.flavor = flavor.id.clone();
    guest.network = network.id.clone();
    let mut host = guest
        .candidates(&DEFAULT_CANDIDATE_FUNCTIONS)
        .await?
        .remove(0);
    host.add_guest(&mut guest).await?;

    beat.stop().await?;
    Ok(guest.ip.map(|ip| ip.to_string()).unwrap_or_default())
}

#[allow(dead_code)]
#[tokio::main]
async fn main() {
    let etcd = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:2379".into());
    match run(&etcd, &format!("quickstart-{}/", lochness::codec::new_id())).await {
        Ok(ip) => println!("guest placed at {ip}"),
        Err(e) => {
            eprintln!("quickstart failed: {e}");
            std::process::exit(1);
        }
    }
}
