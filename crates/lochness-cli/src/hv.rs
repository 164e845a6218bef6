//! `lochness hv …` (the original `hv` CLI, plus `get`, filters, flags for `create` and
//! `resources`).

use clap::{Args, Subcommand};
use lochness_client::{Hypervisor, HypervisorResources};

use crate::entity::{self, Body, Entries, IdsArg, PageArgs, PairsArg, Tree};
use crate::input::{self, Lines};
use crate::output::{self, Format};
use crate::{CliError, Ctx};

#[derive(Debug, Subcommand)]
pub enum HvCmd {
    /// List hypervisors (`ID IP MAC MEMORY DISK CPU`, available/total), or the ones
    /// named.
    List(HvList),
    /// Show hypervisors in detail.
    Get(IdsArg),
    /// Create hypervisors from JSON specs (by convention with `ip` and `mac`), or one
    /// from the flags.
    Create(HvCreate),
    /// Change hypervisors: `(<hv> <spec>)…`.
    Modify(PairsArg),
    /// Delete hypervisors (refused while guests are placed on them).
    Delete(IdsArg),
    /// The guests placed on hypervisors.
    #[command(subcommand)]
    Guests(HvGuestsCmd),
    /// The config of hypervisors.
    #[command(subcommand)]
    Config(HvConfigCmd),
    /// The subnets linked to hypervisors, with their bridges.
    #[command(subcommand)]
    Subnets(HvSubnetsCmd),
    /// Resources of hypervisors (default: all): total, reported available, allocated to
    /// guests, free to place.
    Resources(IdsArg),
}

#[derive(Debug, Args)]
pub struct HvList {
    /// Show these only (or one per line on stdin); default: all.
    #[arg(value_name = "HV")]
    pub ids: Vec<String>,
    /// Only the hypervisors whose heartbeat is (true) or is not (false) alive.
    #[arg(long, value_name = "BOOL")]
    pub alive: Option<bool>,
    /// Only the hypervisors linked to this subnet.
    #[arg(long, value_name = "UUID")]
    pub subnet: Option<String>,
    #[command(flatten)]
    pub page: PageArgs,
}

#[derive(Debug, Args)]
pub struct HvCreate {
    /// JSON specs, e.g. `{"ip":"192.168.10.11","mac":"52:54:00:aa:00:01"}` (or one per
    /// line on stdin).
    #[arg(value_name = "SPEC")]
    pub specs: Vec<String>,
    /// The hypervisor's id (default: chypervisord picks one).
    #[arg(long, value_name = "UUID")]
    pub id: Option<String>,
    /// Its address.
    #[arg(long, value_name = "IP")]
    pub ip: Option<String>,
    /// Its netmask (`255.255.255.0`).
    #[arg(long, value_name = "MASK")]
    pub netmask: Option<String>,
    /// Its gateway.
    #[arg(long, value_name = "IP")]
    pub gateway: Option<String>,
    /// Its MAC address.
    #[arg(long, value_name = "MAC")]
    pub mac: Option<String>,
    /// A metadata entry; repeat for more.
    #[arg(long, value_name = "KEY=VALUE", value_parser = input::key_value)]
    pub metadata: Vec<(String, String)>,
}

#[derive(Debug, Subcommand)]
pub enum HvGuestsCmd {
    /// The guests of each hypervisor (default: every hypervisor), as a tree.
    List(IdsArg),
}

#[derive(Debug, Subcommand)]
pub enum HvConfigCmd {
    /// The config of each hypervisor (default: every hypervisor), `key:value`.
    List(IdsArg),
    /// Set config keys: `(<hv> <spec>)…` with a spec `{"key":"value"}`; an empty value
    /// deletes the key.
    Modify(PairsArg),
}

#[derive(Debug, Subcommand)]
pub enum HvSubnetsCmd {
    /// The subnets of each hypervisor (default: every hypervisor), `subnet:bridge`.
    List(IdsArg),
    /// Link subnets: `(<hv> <spec>)…` with a spec `{"<subnet>":"<bridge>"}`.
    Modify(PairsArg),
    /// Unlink subnets: `(<hv> <subnet>)…`.
    Delete(PairsArg),
}

pub async fn run(ctx: &Ctx, cmd: HvCmd) -> Result<(), CliError> {
    match cmd {
        HvCmd::List(a) => {
            let mut filters = Vec::new();
            if let Some(alive) = a.alive {
                filters.push(("alive".to_string(), alive.to_string()));
            }
            if let Some(subnet) = &a.subnet {
                filters.push(("subnet".to_string(), input::uuid("subnet id", subnet)?));
            }
            entity::list::<Hypervisor>(ctx, a.ids, &a.page, filters).await
        }
        HvCmd::Get(a) => entity::get::<Hypervisor>(ctx, a.ids).await,
        HvCmd::Create(a) => {
            let flags = Body::default()
                .text("id", &entity::opt_uuid("hypervisor id", &a.id)?)
                .text("ip", &a.ip)
                .text("netmask", &a.netmask)
                .text("gateway", &a.gateway)
                .text("mac", &a.mac)
                .metadata(&a.metadata)
                .given();
            entity::create::<Hypervisor>(ctx, entity::bodies(a.specs, flags)?).await
        }
        HvCmd::Modify(a) => entity::modify::<Hypervisor>(ctx, a.args).await,
        HvCmd::Delete(a) => entity::delete::<Hypervisor>(ctx, a.ids).await,
        HvCmd::Guests(HvGuestsCmd::List(a)) => {
            let keys = entity::keys_or_all::<Hypervisor>(ctx, a.ids).await?;
            entity::trees(ctx, keys, |id| async move {
                let guests = ctx.client.hypervisor_guests(&id).await?;
                Ok(Tree::of(&id, "guests", Entries::List(guests)))
            })
            .await
        }
        HvCmd::Config(HvConfigCmd::List(a)) => {
            let keys = entity::keys_or_all::<Hypervisor>(ctx, a.ids).await?;
            entity::trees(ctx, keys, |id| async move {
                let config = ctx.client.hypervisor_config(&id).await?;
                Ok(Tree::of(&id, "config", Entries::Map(config)))
            })
            .await
        }
        HvCmd::Config(HvConfigCmd::Modify(a)) => {
            let pairs = map_pairs(a.args, |_| Ok(()))?;
            entity::trees(ctx, pairs, |(id, changes)| async move {
                let config = ctx.client.patch_hypervisor_config(&id, &changes).await?;
                Ok(Tree::of(&id, "config", Entries::Map(config)))
            })
            .await
        }
        HvCmd::Subnets(HvSubnetsCmd::List(a)) => {
            let keys = entity::keys_or_all::<Hypervisor>(ctx, a.ids).await?;
            entity::trees(ctx, keys, |id| async move {
                let subnets = ctx.client.hypervisor_subnets(&id).await?;
                Ok(Tree::of(&id, "subnet", Entries::Map(subnets)))
            })
            .await
        }
        HvCmd::Subnets(HvSubnetsCmd::Modify(a)) => {
            let pairs = map_pairs(a.args, |links| {
                links
                    .keys()
                    .try_for_each(|subnet| input::uuid("subnet id", subnet).map(drop))
            })?;
            entity::trees(ctx, pairs, |(id, links)| async move {
                let subnets = ctx.client.patch_hypervisor_subnets(&id, &links).await?;
                Ok(Tree::of(&id, "subnet", Entries::Map(subnets)))
            })
            .await
        }
        HvCmd::Subnets(HvSubnetsCmd::Delete(a)) => {
            let args = input::required(a.args, Lines::FirstSpace, "<hv> <subnet> pairs")?;
            let pairs = input::pairs(args, "<hv> <subnet>")?
                .into_iter()
                .map(|(hv, subnet)| {
                    Ok((
                        input::uuid("hypervisor id", &hv)?,
                        input::uuid("subnet id", &subnet)?,
                    ))
                })
                .collect::<Result<Vec<_>, CliError>>()?;
            entity::trees(ctx, pairs, |(id, subnet)| async move {
                let left = ctx.client.delete_hypervisor_subnet(&id, &subnet).await?;
                Ok(Tree::of(&id, "subnet", Entries::Map(left)))
            })
            .await
        }
        HvCmd::Resources(a) => resources(ctx, a.ids).await,
    }
}

type MapPairs = Vec<(String, std::collections::BTreeMap<String, String>)>;

/// The checked `(<hv>, {"k":"v"})` pairs of `config modify` and `subnets modify`.
fn map_pairs(
    args: Vec<String>,
    check: impl Fn(&std::collections::BTreeMap<String, String>) -> Result<(), CliError>,
) -> Result<MapPairs, CliError> {
    let args = input::required(args, Lines::FirstSpace, "<hv> <spec> pairs")?;
    input::pairs(args, "<hv> <spec>")?
        .into_iter()
        .map(|(hv, spec)| {
            let map = input::string_map(&spec)?;
            check(&map)?;
            Ok((input::uuid("hypervisor id", &hv)?, map))
        })
        .collect()
}

/// `hv resources [hv…]`.
async fn resources(ctx: &Ctx, ids: Vec<String>) -> Result<(), CliError> {
    let keys = entity::keys_or_all::<Hypervisor>(ctx, ids).await?;
    let (all, error) = entity::each(keys, |id| async move {
        let r = ctx.client.hypervisor_resources(&id).await?;
        Ok((id, r))
    })
    .await;
    let text = match ctx.format {
        Format::Json => all
            .iter()
            .map(|(id, r)| output::json_line(&ResourcesOf { id, resources: r }))
            .collect::<Result<String, _>>()?,
        Format::Plain | Format::Table if all.is_empty() => String::new(),
        Format::Plain | Format::Table => output::resources_table(&all),
    };
    ctx.print(&text)?;
    entity::finish(error)
}

/// `{"id":…,"total":…,"available":…,"allocated":…,"free":…}`.
#[derive(serde::Serialize)]
struct ResourcesOf<'a> {
    id: &'a str,
    #[serde(flatten)]
    resources: &'a HypervisorResources,
}

#[cfg(test)]
mod tests {
    use super::*;
    use lochness_client::Resources;

    #[test]
    fn config_and_subnet_specs_are_checked() {
        let hv = "aaaa0001-1111-4111-8111-000000000001";
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let pairs = map_pairs(args(&[hv, r#"{"a":"1","b":""}"#]), |_| Ok(())).unwrap();
        assert_eq!(pairs[0].1.len(), 2);
        assert!(map_pairs(args(&[hv, r#"{"a":1}"#]), |_| Ok(())).is_err());
        assert!(map_pairs(args(&[hv]), |_| Ok(())).is_err());
        let subnets = |m: &std::collections::BTreeMap<String, String>| {
            m.keys()
                .try_for_each(|s| input::uuid("subnet id", s).map(drop))
        };
        assert!(map_pairs(args(&[hv, r#"{"junk":"br0"}"#]), subnets).is_err());
        assert!(map_pairs(
            args(&[hv, r#"{"bbbb0001-2222-4222-8222-000000000001":"br0"}"#]),
            subnets
        )
        .is_ok());
    }

    #[test]
    fn resources_json() {
        let r = HypervisorResources {
            total: Resources {
                memory: 1,
                disk: 2,
                cpu: 3,
            },
            ..HypervisorResources::default()
        };
        let line = output::json_line(&ResourcesOf {
            id: "h",
            resources: &r,
        })
        .unwrap();
        assert_eq!(
            line,
            "{\"allocated\":{\"cpu\":0,\"disk\":0,\"memory\":0},\"available\":{\"cpu\":0,\"disk\":0,\"memory\":0},\
             \"free\":{\"cpu\":0,\"disk\":0,\"memory\":0},\"id\":\"h\",\"total\":{\"cpu\":3,\"disk\":2,\"memory\":1}}\n"
        );
    }
}
