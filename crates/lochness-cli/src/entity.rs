//! The commands every entity shares (`list`, `get`, `create`, `modify`, `delete`) and
//! those of flavors, networks, subnets, firewall groups, VLANs and VLAN groups.

use std::collections::BTreeMap;
use std::future::Future;

use clap::{Args, Subcommand};
use lochness_client::{Flavor, FwGroup, ListQuery, Managed, Network, Subnet, Vlan, VlanGroup};
use serde_json::{Map, Value};

use crate::input::{self, Lines, Source};
use crate::output::{self, Format, View};
use crate::{CliError, Ctx};

// ----- shared arguments ----------------------------------------------------------------

/// Paging of a list.
#[derive(Debug, Clone, Default, Args)]
pub struct PageArgs {
    /// List one page of at most N items; the token of the next page goes to stderr.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub limit: Option<u32>,
    /// Start after the page that answered this token (`X-Continue`).
    #[arg(long = "continue", value_name = "TOKEN")]
    pub continue_token: Option<String>,
}

/// `list [id…]`: every item, or the ones named.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Show these only (or one per line on stdin); default: all.
    #[arg(value_name = "ID")]
    pub ids: Vec<String>,
    #[command(flatten)]
    pub page: PageArgs,
}

/// Ids (or one per line on stdin).
#[derive(Debug, Args)]
pub struct IdsArg {
    /// Ids (or one per line on stdin).
    #[arg(value_name = "ID")]
    pub ids: Vec<String>,
}

/// `(<id> <spec>)…` (or one pair per line on stdin, split at the first space).
#[derive(Debug, Args)]
pub struct PairsArg {
    /// Pairs of an id and a JSON object of the members to change.
    #[arg(value_name = "ID SPEC")]
    pub args: Vec<String>,
}

/// A `--metadata key=value` flag.
pub fn metadata_value(entries: &[(String, String)]) -> Value {
    Value::Object(
        entries
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

/// A request body from flags: only the members given.
#[derive(Debug, Default)]
pub struct Body(pub Map<String, Value>);

impl Body {
    pub fn text(mut self, key: &str, value: &Option<String>) -> Body {
        if let Some(v) = value {
            self.0.insert(key.into(), Value::String(v.clone()));
        }
        self
    }

    pub fn number(mut self, key: &str, value: Option<u64>) -> Body {
        if let Some(v) = value {
            self.0.insert(key.into(), Value::from(v));
        }
        self
    }

    pub fn metadata(mut self, entries: &[(String, String)]) -> Body {
        if !entries.is_empty() {
            self.0.insert("metadata".into(), metadata_value(entries));
        }
        self
    }

    pub fn value(mut self, key: &str, value: Value) -> Body {
        self.0.insert(key.into(), value);
        self
    }

    /// The body, `None` when no flag gave anything.
    pub fn given(self) -> Option<Map<String, Value>> {
        (!self.0.is_empty()).then_some(self.0)
    }
}

/// An optional UUID flag, checked and lower-cased.
pub fn opt_uuid(what: &str, value: &Option<String>) -> Result<Option<String>, CliError> {
    value.as_deref().map(|v| input::uuid(what, v)).transpose()
}

/// The bodies of a create: the flags' body, or the JSON specs given (or read from stdin,
/// one per line); not both.
pub fn bodies(
    specs: Vec<String>,
    flags: Option<Map<String, Value>>,
) -> Result<Vec<Map<String, Value>>, CliError> {
    match flags {
        Some(body) if specs.is_empty() => Ok(vec![body]),
        Some(_) => Err(CliError::Usage(
            "give JSON specs or the flags of one item, not both".into(),
        )),
        None => input::required(specs, Lines::Whole, "JSON specs (or the flags)")?
            .iter()
            .map(|s| input::spec(s))
            .collect(),
    }
}

/// Runs `call` for each input in turn, stopping at the first error; the results so far
/// and that error.
pub async fn each<I, T, F, Fut>(inputs: Vec<I>, mut call: F) -> (Vec<T>, Option<CliError>)
where
    F: FnMut(I) -> Fut,
    Fut: Future<Output = Result<T, lochness_client::Error>>,
{
    let mut done = Vec::with_capacity(inputs.len());
    for input in inputs {
        match call(input).await {
            Ok(t) => done.push(t),
            Err(e) => return (done, Some(e.into())),
        }
    }
    (done, None)
}

/// `Ok` or the error `each` stopped at.
pub fn finish(error: Option<CliError>) -> Result<(), CliError> {
    error.map_or(Ok(()), Err)
}

/// Sorted by key: ids as text, VLAN tags as numbers (a shorter decimal is smaller).
pub fn sort<R: View>(items: &mut [R]) {
    items.sort_by_cached_key(|i| {
        let key = i.key();
        (key.len(), key)
    });
}

// ----- the shared commands -----------------------------------------------------------

/// `list [id…]`: the items named (in order), or every item matching `filters` (sorted;
/// one page with `--limit`).
pub async fn list<R: View>(
    ctx: &Ctx,
    ids: Vec<String>,
    page: &PageArgs,
    filters: Vec<(String, String)>,
) -> Result<(), CliError> {
    let narrowed = !filters.is_empty() || page.limit.is_some() || page.continue_token.is_some();
    if narrowed && !ids.is_empty() {
        return Err(CliError::Usage(
            "give ids or filters and paging flags, not both".into(),
        ));
    }
    // With filters or paging there is nothing to read from stdin (it is left alone, for
    // a caller's `while read` loop).
    let ids = if narrowed {
        ids
    } else {
        match input::args_or_stdin(ids, Lines::FirstSpace)? {
            Source::Given(ids) => ids,
            Source::Nothing => Vec::new(),
        }
    };
    if !ids.is_empty() {
        let keys = ids
            .iter()
            .map(|i| R::parse_key(i))
            .collect::<Result<Vec<_>, _>>()?;
        let (items, error) = each(keys, |k| async move { ctx.client.get::<R>(&k).await }).await;
        ctx.items(&items)?;
        return finish(error);
    }
    let query = ListQuery {
        limit: page.limit,
        continue_token: page.continue_token.clone(),
        filters,
    };
    if page.limit.is_some() {
        let mut page = ctx.client.list::<R>(&query).await?;
        sort(&mut page.items);
        ctx.items(&page.items)?;
        if let Some(next) = page.next {
            eprintln!("more: --continue {next}");
        }
        return Ok(());
    }
    let mut items = ctx.client.list_all::<R>(&query).await?;
    sort(&mut items);
    ctx.items(&items)
}

/// `get <id>…`: each item in detail.
pub async fn get<R: View>(ctx: &Ctx, ids: Vec<String>) -> Result<(), CliError> {
    let keys = keys::<R>(input::required(ids, Lines::FirstSpace, "ids")?)?;
    let (items, error) = each(keys, |k| async move { ctx.client.get::<R>(&k).await }).await;
    ctx.details(&items)?;
    finish(error)
}

/// Checked keys of `R`.
pub fn keys<R: View>(args: Vec<String>) -> Result<Vec<String>, CliError> {
    args.iter().map(|a| R::parse_key(a)).collect()
}

/// `create`: one item per body.
pub async fn create<R: View + Managed>(
    ctx: &Ctx,
    bodies: Vec<Map<String, Value>>,
) -> Result<(), CliError> {
    let (items, error) = each(bodies, |body| async move {
        ctx.client.create::<R, _>(&body).await
    })
    .await;
    ctx.items(&items)?;
    finish(error)
}

/// A JSON object given as a spec.
pub type Spec = Map<String, Value>;

/// The checked `(key, spec)` pairs of a `modify`.
pub fn modify_pairs<R: View>(args: Vec<String>) -> Result<Vec<(String, Spec)>, CliError> {
    let args = input::required(args, Lines::FirstSpace, "<id> <spec> pairs")?;
    input::pairs(args, "<id> <spec>")?
        .into_iter()
        .map(|(key, spec)| Ok((R::parse_key(&key)?, input::spec(&spec)?)))
        .collect()
}

/// `modify (<id> <spec>)…`: `PATCH` each with its spec.
pub async fn modify<R: View>(ctx: &Ctx, args: Vec<String>) -> Result<(), CliError> {
    let pairs = modify_pairs::<R>(args)?;
    let (items, error) = each(pairs, |(key, spec)| async move {
        ctx.client.patch::<R, _>(&key, &spec).await
    })
    .await;
    ctx.items(&items)?;
    finish(error)
}

/// `delete <id>…`.
pub async fn delete<R: View + Managed>(ctx: &Ctx, ids: Vec<String>) -> Result<(), CliError> {
    let keys = keys::<R>(input::required(ids, Lines::FirstSpace, "ids")?)?;
    let (items, error) = each(keys, |k| async move { ctx.client.delete::<R>(&k).await }).await;
    ctx.items(&items)?;
    finish(error)
}

/// The keys named (in order), or — none given — every item's (sorted), or those read
/// from stdin (sorted), as the original `hv … list` commands did.
pub async fn keys_or_all<R: View>(ctx: &Ctx, args: Vec<String>) -> Result<Vec<String>, CliError> {
    if !args.is_empty() {
        return keys::<R>(args);
    }
    let mut keys = match input::args_or_stdin(Vec::new(), Lines::FirstSpace)? {
        Source::Given(args) if !args.is_empty() => keys::<R>(args)?,
        _ => ctx
            .client
            .list_all::<R>(&ListQuery::new())
            .await?
            .iter()
            .map(|i| i.key())
            .collect(),
    };
    keys.sort_by_cached_key(|k| (k.len(), k.clone()));
    Ok(keys)
}

/// What hangs below an entity in a tree: a list of ids or tags, or a map.
pub enum Entries {
    List(Vec<String>),
    Map(BTreeMap<String, String>),
}

impl Entries {
    fn is_empty(&self) -> bool {
        match self {
            Entries::List(l) => l.is_empty(),
            Entries::Map(m) => m.is_empty(),
        }
    }
}

/// One entity and what hangs below it, printed as the original `hv` did: a tree, or with
/// `-j` `{"<root_name>":<root>,"<name>":<entries>}` (`<name>` omitted when empty).
pub struct Tree {
    pub root_name: &'static str,
    pub root: Value,
    pub name: &'static str,
    pub entries: Entries,
}

impl Tree {
    /// The tree of the entity `root` (an id).
    pub fn of(root: &str, name: &'static str, entries: Entries) -> Tree {
        Tree {
            root_name: "id",
            root: Value::String(root.to_string()),
            name,
            entries,
        }
    }

    pub fn render(&self, format: Format) -> Result<String, CliError> {
        match format {
            Format::Json => {
                let mut object = Map::new();
                object.insert(self.root_name.into(), self.root.clone());
                if !self.entries.is_empty() {
                    let entries = match &self.entries {
                        Entries::List(l) => {
                            // Tags stay numbers.
                            let items = l
                                .iter()
                                .map(|s| match s.parse::<u64>() {
                                    Ok(n) if self.name == "tags" => Value::from(n),
                                    _ => Value::String(s.clone()),
                                })
                                .collect();
                            Value::Array(items)
                        }
                        Entries::Map(m) => serde_json::to_value(m).unwrap_or_default(),
                    };
                    object.insert(self.name.into(), entries);
                }
                output::json_line(&Value::Object(object))
            }
            Format::Plain | Format::Table => {
                let root = match &self.root {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                Ok(match &self.entries {
                    Entries::List(l) => output::tree_list(&root, l),
                    Entries::Map(m) => output::tree_map(&root, m),
                })
            }
        }
    }
}

/// Prints trees; stops at the first error of `call` after printing those before it.
pub async fn trees<I, F, Fut>(ctx: &Ctx, inputs: Vec<I>, mut call: F) -> Result<(), CliError>
where
    F: FnMut(I) -> Fut,
    Fut: Future<Output = Result<Tree, lochness_client::Error>>,
{
    for input in inputs {
        let tree = call(input).await?;
        ctx.print(&tree.render(ctx.format)?)?;
    }
    Ok(())
}

// ----- flavors -------------------------------------------------------------------------

#[derive(Debug, Subcommand)]
pub enum FlavorCmd {
    /// List flavors: `ID IMAGE MEMORY DISK CPU METADATA`.
    List(ListArgs),
    /// Show flavors in detail.
    Get(IdsArg),
    /// Create flavors from JSON specs, or one from the flags.
    Create(FlavorCreate),
    /// Change flavors: `(<id> <spec>)…`.
    Modify(PairsArg),
    /// Delete flavors (refused while guests use them).
    Delete(IdsArg),
}

#[derive(Debug, Args)]
pub struct FlavorCreate {
    /// JSON specs, e.g. `{"image":"…","memory":512,"disk":10240,"cpu":1}` (or one per
    /// line on stdin).
    #[arg(value_name = "SPEC")]
    pub specs: Vec<String>,
    /// The flavor's id (default: the daemon picks one).
    #[arg(long, value_name = "UUID")]
    pub id: Option<String>,
    /// The image guests of this flavor boot from.
    #[arg(long, value_name = "UUID")]
    pub image: Option<String>,
    /// Memory in MiB.
    #[arg(long, value_name = "MIB")]
    pub memory: Option<u64>,
    /// Disk in MiB.
    #[arg(long, value_name = "MIB")]
    pub disk: Option<u64>,
    /// Virtual CPUs.
    #[arg(long, value_name = "N")]
    pub cpu: Option<u64>,
    /// A metadata entry; repeat for more.
    #[arg(long, value_name = "KEY=VALUE", value_parser = input::key_value)]
    pub metadata: Vec<(String, String)>,
}

pub async fn flavor(ctx: &Ctx, cmd: FlavorCmd) -> Result<(), CliError> {
    match cmd {
        FlavorCmd::List(a) => list::<Flavor>(ctx, a.ids, &a.page, Vec::new()).await,
        FlavorCmd::Get(a) => get::<Flavor>(ctx, a.ids).await,
        FlavorCmd::Create(a) => {
            let flags = Body::default()
                .text("id", &opt_uuid("flavor id", &a.id)?)
                .text("image", &opt_uuid("image id", &a.image)?)
                .number("memory", a.memory)
                .number("disk", a.disk)
                .number("cpu", a.cpu)
                .metadata(&a.metadata)
                .given();
            create::<Flavor>(ctx, bodies(a.specs, flags)?).await
        }
        FlavorCmd::Modify(a) => modify::<Flavor>(ctx, a.args).await,
        FlavorCmd::Delete(a) => delete::<Flavor>(ctx, a.ids).await,
    }
}

// ----- networks ------------------------------------------------------------------------

#[derive(Debug, Subcommand)]
pub enum NetworkCmd {
    /// List networks: `ID METADATA`.
    List(ListArgs),
    /// Show networks in detail.
    Get(IdsArg),
    /// Create networks from JSON specs, or one from the flags.
    Create(MetadataCreate),
    /// Change networks: `(<id> <spec>)…`.
    Modify(PairsArg),
    /// Delete networks (refused while they have subnets or guests).
    Delete(IdsArg),
    /// The subnets of networks.
    #[command(subcommand)]
    Subnets(NetworkSubnetsCmd),
}

#[derive(Debug, Args)]
pub struct MetadataCreate {
    /// JSON specs, e.g. `{"metadata":{"name":"prod"}}` (or one per line on stdin).
    #[arg(value_name = "SPEC")]
    pub specs: Vec<String>,
    /// The id (default: the daemon picks one).
    #[arg(long, value_name = "UUID")]
    pub id: Option<String>,
    /// A metadata entry; repeat for more.
    #[arg(long, value_name = "KEY=VALUE", value_parser = input::key_value)]
    pub metadata: Vec<(String, String)>,
}

#[derive(Debug, Subcommand)]
pub enum NetworkSubnetsCmd {
    /// The subnets of each network (default: every network), as a tree.
    List(IdsArg),
    /// Add subnets to a network.
    Add {
        /// The network.
        #[arg(value_name = "NETWORK")]
        network: String,
        /// The subnets.
        #[arg(value_name = "SUBNET", required = true)]
        subnets: Vec<String>,
    },
    /// Remove subnets from a network.
    Remove {
        /// The network.
        #[arg(value_name = "NETWORK")]
        network: String,
        /// The subnets.
        #[arg(value_name = "SUBNET", required = true)]
        subnets: Vec<String>,
    },
}

pub async fn network(ctx: &Ctx, cmd: NetworkCmd) -> Result<(), CliError> {
    match cmd {
        NetworkCmd::List(a) => list::<Network>(ctx, a.ids, &a.page, Vec::new()).await,
        NetworkCmd::Get(a) => get::<Network>(ctx, a.ids).await,
        NetworkCmd::Create(a) => {
            let flags = Body::default()
                .text("id", &opt_uuid("network id", &a.id)?)
                .metadata(&a.metadata)
                .given();
            create::<Network>(ctx, bodies(a.specs, flags)?).await
        }
        NetworkCmd::Modify(a) => modify::<Network>(ctx, a.args).await,
        NetworkCmd::Delete(a) => delete::<Network>(ctx, a.ids).await,
        NetworkCmd::Subnets(NetworkSubnetsCmd::List(a)) => {
            let keys = keys_or_all::<Network>(ctx, a.ids).await?;
            trees(ctx, keys, |id| async move {
                let subnets = ctx.client.network_subnets(&id).await?;
                Ok(Tree::of(&id, "subnets", Entries::List(subnets)))
            })
            .await
        }
        NetworkCmd::Subnets(NetworkSubnetsCmd::Add { network, subnets }) => {
            let network = input::uuid("network id", &network)?;
            let subnets = input::uuids("subnet id", &subnets)?;
            let mut last = None;
            for subnet in subnets {
                last = Some(ctx.client.add_network_subnet(&network, &subnet).await?);
            }
            let tree = Tree::of(&network, "subnets", Entries::List(last.unwrap_or_default()));
            ctx.print(&tree.render(ctx.format)?)
        }
        NetworkCmd::Subnets(NetworkSubnetsCmd::Remove { network, subnets }) => {
            let network = input::uuid("network id", &network)?;
            let subnets = input::uuids("subnet id", &subnets)?;
            let mut last = None;
            for subnet in subnets {
                last = Some(ctx.client.remove_network_subnet(&network, &subnet).await?);
            }
            let tree = Tree::of(&network, "subnets", Entries::List(last.unwrap_or_default()));
            ctx.print(&tree.render(ctx.format)?)
        }
    }
}

// ----- subnets -------------------------------------------------------------------------

#[derive(Debug, Subcommand)]
pub enum SubnetCmd {
    /// List subnets: `ID NETWORK CIDR GATEWAY RANGE`.
    List(ListArgs),
    /// Show subnets in detail.
    Get(IdsArg),
    /// Create subnets from JSON specs, or one from the flags.
    Create(SubnetCreate),
    /// Change subnets: `(<id> <spec>)…`.
    Modify(PairsArg),
    /// Delete subnets (refused while addresses are reserved or hypervisors link them).
    Delete(IdsArg),
    /// The reserved addresses of subnets (default: every subnet), `address:guest`.
    Addresses(IdsArg),
}

#[derive(Debug, Args)]
pub struct SubnetCreate {
    /// JSON specs, e.g. `{"network":"…","cidr":"10.10.0.0/24","gateway":"10.10.0.1",
    /// "start":"10.10.0.10","end":"10.10.0.200"}` (or one per line on stdin).
    #[arg(value_name = "SPEC")]
    pub specs: Vec<String>,
    /// The subnet's id (default: the daemon picks one).
    #[arg(long, value_name = "UUID")]
    pub id: Option<String>,
    /// The network it belongs to.
    #[arg(long, value_name = "UUID")]
    pub network: Option<String>,
    /// Its range, `a.b.c.d/len`.
    #[arg(long, value_name = "CIDR")]
    pub cidr: Option<String>,
    /// The guests' gateway.
    #[arg(long, value_name = "IP")]
    pub gateway: Option<String>,
    /// First address handed out.
    #[arg(long, value_name = "IP")]
    pub start: Option<String>,
    /// Last address handed out.
    #[arg(long, value_name = "IP")]
    pub end: Option<String>,
    /// A metadata entry; repeat for more.
    #[arg(long, value_name = "KEY=VALUE", value_parser = input::key_value)]
    pub metadata: Vec<(String, String)>,
}

pub async fn subnet(ctx: &Ctx, cmd: SubnetCmd) -> Result<(), CliError> {
    match cmd {
        SubnetCmd::List(a) => list::<Subnet>(ctx, a.ids, &a.page, Vec::new()).await,
        SubnetCmd::Get(a) => get::<Subnet>(ctx, a.ids).await,
        SubnetCmd::Create(a) => {
            let flags = Body::default()
                .text("id", &opt_uuid("subnet id", &a.id)?)
                .text("network", &opt_uuid("network id", &a.network)?)
                .text("cidr", &a.cidr)
                .text("gateway", &a.gateway)
                .text("start", &a.start)
                .text("end", &a.end)
                .metadata(&a.metadata)
                .given();
            create::<Subnet>(ctx, bodies(a.specs, flags)?).await
        }
        SubnetCmd::Modify(a) => modify::<Subnet>(ctx, a.args).await,
        SubnetCmd::Delete(a) => delete::<Subnet>(ctx, a.ids).await,
        SubnetCmd::Addresses(a) => {
            let keys = keys_or_all::<Subnet>(ctx, a.ids).await?;
            trees(ctx, keys, |id| async move {
                let addresses = ctx.client.subnet_addresses(&id).await?;
                Ok(Tree::of(&id, "addresses", Entries::Map(addresses)))
            })
            .await
        }
    }
}

// ----- firewall groups -----------------------------------------------------------------

#[derive(Debug, Subcommand)]
pub enum FwgroupCmd {
    /// List firewall groups: `ID RULES METADATA`.
    List(ListArgs),
    /// Show firewall groups with their rules.
    Get(IdsArg),
    /// Create firewall groups from JSON specs, or one from the flags.
    Create(FwgroupCreate),
    /// Change firewall groups: `(<id> <spec>)…` (a spec's `rules` replace them all).
    Modify(PairsArg),
    /// Delete firewall groups (refused while guests or rules refer to them).
    Delete(IdsArg),
}

#[derive(Debug, Args)]
pub struct FwgroupCreate {
    /// JSON specs, e.g. `{"rules":[{"source":"10.0.0.0/8","portStart":22,"portEnd":22,
    /// "protocol":"tcp","action":"accept"}]}` (or one per line on stdin).
    #[arg(value_name = "SPEC")]
    pub specs: Vec<String>,
    /// The group's id (default: the daemon picks one).
    #[arg(long, value_name = "UUID")]
    pub id: Option<String>,
    /// A rule: `source=CIDR|group=ID,ports=N[-M],protocol=tcp[,action=accept]`; repeat
    /// for more.
    #[arg(long, value_name = "RULE", value_parser = input::fw_rule)]
    pub rule: Vec<Value>,
    /// A metadata entry; repeat for more.
    #[arg(long, value_name = "KEY=VALUE", value_parser = input::key_value)]
    pub metadata: Vec<(String, String)>,
}

pub async fn fwgroup(ctx: &Ctx, cmd: FwgroupCmd) -> Result<(), CliError> {
    match cmd {
        FwgroupCmd::List(a) => list::<FwGroup>(ctx, a.ids, &a.page, Vec::new()).await,
        FwgroupCmd::Get(a) => get::<FwGroup>(ctx, a.ids).await,
        FwgroupCmd::Create(a) => {
            let mut flags = Body::default()
                .text("id", &opt_uuid("firewall group id", &a.id)?)
                .metadata(&a.metadata);
            if !a.rule.is_empty() {
                flags = flags.value("rules", Value::Array(a.rule));
            }
            create::<FwGroup>(ctx, bodies(a.specs, flags.given())?).await
        }
        FwgroupCmd::Modify(a) => modify::<FwGroup>(ctx, a.args).await,
        FwgroupCmd::Delete(a) => delete::<FwGroup>(ctx, a.ids).await,
    }
}

// ----- VLANs ---------------------------------------------------------------------------

#[derive(Debug, Subcommand)]
pub enum VlanCmd {
    /// List VLANs: `TAG DESCRIPTION`.
    List(ListArgs),
    /// Show VLANs.
    Get(IdsArg),
    /// Create VLANs from JSON specs (`{"tag":100,"description":"…"}`), or one from the
    /// flags.
    Create(VlanCreate),
    /// Change VLANs: `(<tag> <spec>)…`.
    Modify(PairsArg),
    /// Delete VLANs.
    Delete(IdsArg),
    /// The VLAN groups of VLANs.
    #[command(subcommand)]
    Groups(VlanGroupsCmd),
}

#[derive(Debug, Args)]
pub struct VlanCreate {
    /// JSON specs (or one per line on stdin).
    #[arg(value_name = "SPEC")]
    pub specs: Vec<String>,
    /// The tag, 1-4095.
    #[arg(long, value_name = "TAG", value_parser = clap::value_parser!(u16).range(1..=4095))]
    pub tag: Option<u16>,
    /// What it is for.
    #[arg(long, value_name = "TEXT")]
    pub description: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum VlanGroupsCmd {
    /// The groups of each VLAN (default: every VLAN), as a tree.
    List(IdsArg),
    /// Put a VLAN in exactly these groups (none: in no group).
    Set {
        /// The VLAN's tag.
        #[arg(value_name = "TAG")]
        tag: String,
        /// The groups.
        #[arg(value_name = "GROUP")]
        groups: Vec<String>,
    },
}

fn tag_tree(tag: &str, groups: Vec<String>) -> Tree {
    Tree {
        root_name: "tag",
        root: tag.parse::<u16>().map(Value::from).unwrap_or_default(),
        name: "groups",
        entries: Entries::List(groups),
    }
}

pub async fn vlan(ctx: &Ctx, cmd: VlanCmd) -> Result<(), CliError> {
    match cmd {
        VlanCmd::List(a) => list::<Vlan>(ctx, a.ids, &a.page, Vec::new()).await,
        VlanCmd::Get(a) => get::<Vlan>(ctx, a.ids).await,
        VlanCmd::Create(a) => {
            let flags = Body::default()
                .number("tag", a.tag.map(u64::from))
                .text("description", &a.description)
                .given();
            create::<Vlan>(ctx, bodies(a.specs, flags)?).await
        }
        VlanCmd::Modify(a) => modify::<Vlan>(ctx, a.args).await,
        VlanCmd::Delete(a) => delete::<Vlan>(ctx, a.ids).await,
        VlanCmd::Groups(VlanGroupsCmd::List(a)) => {
            let keys = keys_or_all::<Vlan>(ctx, a.ids).await?;
            trees(ctx, keys, |tag| async move {
                let groups = ctx
                    .client
                    .vlan_groups(tag.parse().unwrap_or_default())
                    .await?;
                Ok(tag_tree(&tag, groups))
            })
            .await
        }
        VlanCmd::Groups(VlanGroupsCmd::Set { tag, groups }) => {
            let tag = input::tag(&tag)?;
            let groups = input::uuids("VLAN group id", &groups)?;
            let now = ctx.client.set_vlan_groups(tag, &groups).await?;
            ctx.print(&tag_tree(&tag.to_string(), now).render(ctx.format)?)
        }
    }
}

// ----- VLAN groups ---------------------------------------------------------------------

#[derive(Debug, Subcommand)]
pub enum VlangroupCmd {
    /// List VLAN groups: `ID DESCRIPTION METADATA`.
    List(ListArgs),
    /// Show VLAN groups.
    Get(IdsArg),
    /// Create VLAN groups from JSON specs, or one from the flags.
    Create(VlangroupCreate),
    /// Change VLAN groups: `(<id> <spec>)…`.
    Modify(PairsArg),
    /// Delete VLAN groups.
    Delete(IdsArg),
    /// The VLANs of VLAN groups.
    #[command(subcommand)]
    Tags(VlangroupTagsCmd),
}

#[derive(Debug, Args)]
pub struct VlangroupCreate {
    /// JSON specs, e.g. `{"description":"web"}` (or one per line on stdin).
    #[arg(value_name = "SPEC")]
    pub specs: Vec<String>,
    /// The group's id (default: the daemon picks one).
    #[arg(long, value_name = "UUID")]
    pub id: Option<String>,
    /// What it is for.
    #[arg(long, value_name = "TEXT")]
    pub description: Option<String>,
    /// A metadata entry; repeat for more.
    #[arg(long, value_name = "KEY=VALUE", value_parser = input::key_value)]
    pub metadata: Vec<(String, String)>,
}

#[derive(Debug, Subcommand)]
pub enum VlangroupTagsCmd {
    /// The VLANs of each group (default: every group), as a tree.
    List(IdsArg),
    /// Give a group exactly these VLANs (none: no VLAN).
    Set {
        /// The group.
        #[arg(value_name = "GROUP")]
        group: String,
        /// The VLANs' tags.
        #[arg(value_name = "TAG")]
        tags: Vec<String>,
    },
}

fn group_tree(id: &str, tags: &[u16]) -> Tree {
    Tree::of(
        id,
        "tags",
        Entries::List(tags.iter().map(u16::to_string).collect()),
    )
}

pub async fn vlangroup(ctx: &Ctx, cmd: VlangroupCmd) -> Result<(), CliError> {
    match cmd {
        VlangroupCmd::List(a) => list::<VlanGroup>(ctx, a.ids, &a.page, Vec::new()).await,
        VlangroupCmd::Get(a) => get::<VlanGroup>(ctx, a.ids).await,
        VlangroupCmd::Create(a) => {
            let flags = Body::default()
                .text("id", &opt_uuid("VLAN group id", &a.id)?)
                .text("description", &a.description)
                .metadata(&a.metadata)
                .given();
            create::<VlanGroup>(ctx, bodies(a.specs, flags)?).await
        }
        VlangroupCmd::Modify(a) => modify::<VlanGroup>(ctx, a.args).await,
        VlangroupCmd::Delete(a) => delete::<VlanGroup>(ctx, a.ids).await,
        VlangroupCmd::Tags(VlangroupTagsCmd::List(a)) => {
            let keys = keys_or_all::<VlanGroup>(ctx, a.ids).await?;
            trees(ctx, keys, |id| async move {
                let tags = ctx.client.vlangroup_tags(&id).await?;
                Ok(group_tree(&id, &tags))
            })
            .await
        }
        VlangroupCmd::Tags(VlangroupTagsCmd::Set { group, tags }) => {
            let group = input::uuid("VLAN group id", &group)?;
            let tags = tags
                .iter()
                .map(|t| input::tag(t))
                .collect::<Result<Vec<_>, _>>()?;
            let now = ctx.client.set_vlangroup_tags(&group, &tags).await?;
            ctx.print(&group_tree(&group, &now).render(ctx.format)?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_bodies_from_flags_or_specs() {
        let flags = Body::default()
            .text("id", &None)
            .text("image", &Some("i".into()))
            .number("memory", Some(512))
            .metadata(&[("size".into(), "small".into())])
            .given();
        assert_eq!(
            Value::Object(flags.clone().unwrap()),
            serde_json::json!({"image": "i", "memory": 512, "metadata": {"size": "small"}})
        );
        assert_eq!(Body::default().text("id", &None).given(), None);
        assert_eq!(bodies(Vec::new(), flags.clone()).unwrap().len(), 1);
        let e = bodies(vec!["{}".into()], flags).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let specs = bodies(vec![r#"{"a": 1}"#.into(), "{}".into()], None).unwrap();
        assert_eq!(specs.len(), 2);
        assert!(bodies(vec!["[]".into()], None).is_err());
    }

    #[test]
    fn modify_pairs_are_checked_before_sending() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let id = "AAAA0001-1111-4111-8111-000000000001";
        let pairs = modify_pairs::<lochness_client::Hypervisor>(args(&[id, r#"{"ip":"1.2.3.4"}"#]))
            .unwrap();
        assert_eq!(pairs[0].0, id.to_ascii_lowercase());
        for bad in [
            args(&[id]),
            args(&[id, "{}", id]),
            args(&["not-a-uuid", "{}"]),
            args(&[id, "not json"]),
        ] {
            let e = modify_pairs::<lochness_client::Hypervisor>(bad.clone()).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad:?}: {e}");
        }
        let pairs = modify_pairs::<Vlan>(args(&["10", r#"{"description":"x"}"#])).unwrap();
        assert_eq!(pairs[0].0, "10");
        assert!(modify_pairs::<Vlan>(args(&["0", "{}"])).is_err());
    }

    #[test]
    fn trees_in_every_format() {
        let tree = Tree::of(
            "h1",
            "subnet",
            Entries::Map(BTreeMap::from([("s1".into(), "br0".into())])),
        );
        assert_eq!(tree.render(Format::Plain).unwrap(), "h1\n└── s1:br0\n");
        assert_eq!(
            tree.render(Format::Json).unwrap(),
            "{\"id\":\"h1\",\"subnet\":{\"s1\":\"br0\"}}\n"
        );
        let empty = Tree::of("h2", "guests", Entries::List(Vec::new()));
        assert_eq!(empty.render(Format::Json).unwrap(), "{\"id\":\"h2\"}\n");
        assert_eq!(empty.render(Format::Table).unwrap(), "h2\n");
        let tags = group_tree("g", &[100, 20]);
        assert_eq!(
            tags.render(Format::Json).unwrap(),
            "{\"id\":\"g\",\"tags\":[100,20]}\n"
        );
        assert_eq!(tags.render(Format::Plain).unwrap(), "g\n├── 20\n└── 100\n");
        let groups = tag_tree("10", vec!["g".into()]);
        assert_eq!(
            groups.render(Format::Json).unwrap(),
            "{\"groups\":[\"g\"],\"tag\":10}\n"
        );
    }

    #[test]
    fn sorting_by_key() {
        let mut vlans: Vec<Vlan> = [100, 20, 3]
            .into_iter()
            .map(|tag| Vlan {
                tag,
                ..Vlan::default()
            })
            .collect();
        sort(&mut vlans);
        let tags: Vec<u16> = vlans.iter().map(|v| v.tag).collect();
        assert_eq!(tags, [3, 20, 100]);
    }
}
