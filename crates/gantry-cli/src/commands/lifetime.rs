//! Lifetimes and clean-up: `extend`, `gc`, and `destroy` of several clusters (names, `--all`,
//! `--expired`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use gantry_core::tags::{self, World};
use gantry_engine::app::{CacheUse, ProjectInventory};
use gantry_engine::gc::{self, GcInput, GcPlan, Orphan};
use gantry_engine::ops::{self, ExtendFrom, Report};
use gantry_provider::{NodeInfo, Provider};
use gantry_state::ClusterRecord;
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::cluster::{confirm, print_report};
use crate::cli::{Global, OutputFormat};
use crate::context::{self, Home};
use crate::exit::{self, CliResult, Failure};
use crate::{output, progress};

/// `2h3m` for people (whole seconds, no milliseconds).
fn human(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs()))
        .to_string()
        .replace(' ', "")
}

pub async fn extend(g: &Global, cluster: &str, by: Duration, from_now: bool) -> CliResult {
    gantry_core::validate_name(cluster).map_err(|e| Failure::new(exit::USAGE, e))?;
    if by.is_zero() {
        return Err(Failure::new(
            exit::USAGE,
            anyhow::anyhow!("the duration must be greater than zero"),
        )
        .hint("e.g. `gantry extend demo 4h`"));
    }
    let home = Home::from_global(g)?;
    let app = crate::app::app(g, &home).await?;
    let from = if from_now {
        ExtendFrom::Now
    } else {
        ExtendFrom::Expiry
    };
    let (listener, finish) = progress::listener(g.output);
    let result = app.extend(cluster, by, from, Some(listener)).await;
    finish();
    let r = result?;
    let left = (r.expires_at - OffsetDateTime::now_utc()).whole_seconds();
    match g.output {
        OutputFormat::Json => output::print_json(&json!({
            "run_id": r.run_id,
            "cluster": r.cluster,
            "tracked": r.tracked,
            "previous": r.previous.map(output::rfc3339),
            "expires_at": output::rfc3339(r.expires_at),
            "expires_in_secs": left,
            "nodes": r.nodes,
            "elapsed_ms": r.elapsed_ms,
        })),
        OutputFormat::Text => {
            let was = r
                .previous
                .map(|p| format!("; was {}", output::time_left(p)))
                .unwrap_or_default();
            println!(
                "extend {}: expires in {} (at {}{was}); {} node(s) retagged",
                r.cluster,
                output::time_left(r.expires_at),
                output::rfc3339(r.expires_at),
                r.nodes.len()
            );
        }
    }
    Ok(exit::OK)
}

/// The project's clusters as gantry knows them: records and nodes found by tags in every
/// listing scope (local nodes, every Docker engine, every AWS region; see
/// [`super::scopes::list_project`]), and which of them are this world's.
struct Known {
    records: Vec<ClusterRecord>,
    /// Every node found, this world's and others'.
    nodes: Vec<NodeInfo>,
    /// This world, with the uid of every recorded cluster (for nodes an older gantry made).
    world: World,
    /// Where each node was found.
    inventory: ProjectInventory,
}

impl Known {
    /// Lists the project live; the listing's warnings (a region that could not be listed) go to
    /// stderr.
    async fn load(g: &Global, home: &Home) -> CliResult<Known> {
        let inventory = super::scopes::list_project(g, home, &[], CacheUse::LIVE).await?;
        for w in &inventory.warnings {
            eprintln!("warning: {}", w.message);
        }
        Ok(Known {
            records: inventory.records.clone(),
            nodes: inventory.nodes(),
            world: inventory.world.clone(),
            inventory,
        })
    }

    /// The provider of a cluster: its record's, else the one of the scope whose listing found
    /// its nodes.
    async fn provider(
        &self,
        home: &Home,
        store: &Arc<dyn gantry_state::StateStore>,
        ssh: &gantry_ssh::ClientConfig,
        project: &str,
        cluster: &str,
    ) -> CliResult<Arc<dyn Provider>> {
        let (provider, record) =
            context::provider_for_cluster(home, store, ssh, project, cluster).await?;
        if record.is_none()
            && let Some(scope) = self.inventory.scope_of_cluster(cluster)
        {
            return Ok(scope.provider.clone());
        }
        Ok(provider)
    }

    /// name → (record, nodes), every cluster with a record or a node of this world.
    fn clusters(&self) -> BTreeMap<String, (Option<&ClusterRecord>, Vec<NodeInfo>)> {
        let mut out: BTreeMap<String, (Option<&ClusterRecord>, Vec<NodeInfo>)> = BTreeMap::new();
        for r in &self.records {
            out.entry(r.name.clone()).or_default().0 = Some(r);
        }
        for n in self.nodes.iter().filter(|n| self.world.owns(&n.tags)) {
            if let Some(c) = n.tags.get(tags::CLUSTER) {
                out.entry(c.clone()).or_default().1.push(n.clone());
            }
        }
        out
    }

    /// name → who made them, for clusters whose nodes are all another world's (and that have no
    /// record here): never offered for destruction.
    fn foreign(&self) -> BTreeMap<String, Vec<String>> {
        let ours = self.clusters();
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for n in self.nodes.iter().filter(|n| !self.world.owns(&n.tags)) {
            if let Some(c) = n.tags.get(tags::CLUSTER)
                && !ours.contains_key(c)
            {
                let owners = out.entry(c.clone()).or_default();
                let o = tags::owner_of(&n.tags);
                if !owners.contains(&o) {
                    owners.push(o);
                }
            }
        }
        out
    }
}

/// `gantry destroy A B C | --all | --expired`. One plain name keeps the single-cluster path
/// (and its JSON object); every other form prints an array of reports.
pub async fn destroy(
    g: &Global,
    names: &[String],
    all: bool,
    expired: bool,
    yes: bool,
) -> CliResult {
    if names.is_empty() && !all && !expired {
        return Err(Failure::new(
            exit::USAGE,
            anyhow::anyhow!("name the clusters to destroy, or pass --all or --expired"),
        )
        .hint("`gantry ls` lists the clusters of this project"));
    }
    if all && !names.is_empty() {
        return Err(Failure::new(
            exit::USAGE,
            anyhow::anyhow!("--all destroys every cluster of the project; name no cluster with it"),
        ));
    }
    if names.len() == 1 && !all && !expired {
        return super::cluster::destroy(g, &names[0], yes).await;
    }
    for n in names {
        gantry_core::validate_name(n).map_err(|e| Failure::new(exit::USAGE, e))?;
    }
    let home = Home::from_global(g)?;
    let known = Known::load(g, &home).await?;
    let clusters = known.clusters();
    let foreign = known.foreign();
    // A named cluster that only another world has: refused, naming who made it.
    if let Some((name, owners)) = names
        .iter()
        .find_map(|n| foreign.get(n.as_str()).map(|o| (n, o)))
    {
        return Err(Failure::new(
            exit::USAGE,
            anyhow::anyhow!(
                "cluster {name} of project {} belongs to another gantry world: made by {}; \
                 nothing destroyed",
                g.project,
                owners.join(", ")
            ),
        )
        .hint("gantry never touches another world's resources: ask their owner"));
    }
    if names.is_empty() && g.output == OutputFormat::Text {
        for (name, owners) in &foreign {
            eprintln!(
                "not offered: cluster {name} belongs to another gantry world (made by {})",
                owners.join(", ")
            );
        }
    }
    let unknown: Vec<&str> = names
        .iter()
        .filter(|n| !clusters.contains_key(n.as_str()))
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        return Err(Failure::new(
            exit::USAGE,
            anyhow::anyhow!(
                "no cluster {} in project {}; nothing destroyed",
                unknown.join(", "),
                g.project
            ),
        )
        .hint("`gantry ls` lists the clusters of this project"));
    }
    let now = OffsetDateTime::now_utc();
    let mut chosen: Vec<(String, usize)> = Vec::new();
    for (name, (record, nodes)) in &clusters {
        if !names.is_empty() && !names.contains(name) {
            continue;
        }
        if expired && !gc::is_expired(*record, nodes, now) {
            if names.contains(name) {
                eprintln!("skipping {name}: not expired");
            }
            continue;
        }
        chosen.push((name.clone(), nodes.len()));
    }
    if chosen.is_empty() {
        if g.output == OutputFormat::Json {
            output::print_json(&Vec::<Value>::new());
        } else {
            eprintln!("nothing to destroy in project {}", g.project);
        }
        return Ok(exit::OK);
    }
    if !yes {
        let list = chosen
            .iter()
            .map(|(n, c)| format!("{n} ({c} node(s))"))
            .collect::<Vec<_>>()
            .join(", ");
        confirm(&format!("destroy {} cluster(s): {list}?", chosen.len()))?;
    }
    let store = context::open_store(&home).await?;
    let ssh = context::ssh_config(&home, &store, &g.project).await?;
    let mut reports: Vec<Report> = Vec::new();
    let mut first_failure: Option<Failure> = None;
    for (name, _) in &chosen {
        let outcome: CliResult<Option<Report>> = async {
            let provider = known
                .provider(&home, &store, &ssh, &g.project, name)
                .await?;
            let (listener, finish) = progress::listener(g.output);
            let ctx = context::engine_context(
                g,
                &home,
                store.clone(),
                ssh.clone(),
                provider,
                Some(listener),
            )
            .await?;
            // --expired re-checks expiry under the lock (an `extend` may have won the race).
            let r = if expired {
                ops::gc_destroy(&ctx, name).await
            } else {
                ops::destroy(&ctx, name).await.map(Some)
            };
            finish();
            Ok(r?)
        }
        .await;
        match outcome {
            Ok(Some(r)) => {
                if g.output == OutputFormat::Text {
                    print_report(g, &r, "destroy");
                }
                reports.push(r);
            }
            Ok(None) => eprintln!("skipping {name}: no longer expired"),
            Err(f) => {
                eprintln!("destroy {name} failed:");
                output::print_failure(&f);
                first_failure.get_or_insert(f);
            }
        }
    }
    if g.output == OutputFormat::Json {
        output::print_json(&reports);
    }
    match first_failure {
        Some(f) => Ok(f.code),
        None => Ok(exit::OK),
    }
}

/// The orphans of one cluster in one listing scope, and that scope's provider.
type OrphansOf = (Arc<dyn Provider>, Vec<String>);

fn orphan_json(o: &Orphan) -> Value {
    json!({
        "node": o.node.name,
        "cluster": o.cluster,
        "reason": o.reason.as_str(),
        "provider_id": o.node.provider_id,
        "created_at": o.node.created_at,
        "age_secs": o.age.map(|a| a.as_secs()),
        "eligible_in_secs": o.eligible_in.map(|a| a.as_secs()),
    })
}

fn print_gc_plan(project: &str, grace: Duration, p: &GcPlan, now: OffsetDateTime) {
    if p.is_empty() && p.waiting.is_empty() && p.foreign.is_empty() {
        println!("gc: nothing to do in project {project}");
        return;
    }
    println!("gc in project {project} (grace {}):", human(grace));
    for e in &p.expired {
        let ago = Duration::try_from(now - e.expires_at).unwrap_or_default();
        let nodes = if e.nodes.is_empty() {
            "no nodes".to_string()
        } else {
            format!("{} node(s): {}", e.nodes.len(), e.nodes.join(", "))
        };
        let untracked = if e.tracked { "" } else { ", untracked" };
        println!(
            "  destroy cluster {}: expired {} ago{untracked}, {nodes}",
            e.cluster,
            human(ago)
        );
    }
    for o in &p.orphans {
        println!(
            "  delete  node {} (cluster {}): {}, created {} ago",
            o.node.name,
            o.cluster,
            o.reason.describe(),
            o.age.map(human).unwrap_or_else(|| "?".into())
        );
    }
    for o in &p.waiting {
        let when = match o.eligible_in {
            Some(d) => format!("deletable in {}", human(d)),
            None => format!(
                "age unknown (created_at {:?}), never deleted",
                o.node.created_at
            ),
        };
        println!(
            "  wait    node {} (cluster {}): {}, {when}",
            o.node.name,
            o.cluster,
            o.reason.describe()
        );
    }
    for f in &p.foreign {
        println!(
            "  skip    cluster {} of another gantry world (made by {}): {} node(s){}: {}; never touched",
            f.cluster,
            f.owners.join(", "),
            f.nodes.len(),
            if f.expired { ", expired" } else { "" },
            f.nodes.join(", ")
        );
    }
    if p.is_empty() {
        println!("gc: nothing to do now");
    }
}

/// `gantry gc [--dry-run] [--grace D]`.
pub async fn gc(g: &Global, dry_run: bool, grace: Duration) -> CliResult {
    let home = Home::from_global(g)?;
    let known = Known::load(g, &home).await?;
    let now = OffsetDateTime::now_utc();
    let plan = gc::plan_gc(&GcInput {
        project: &g.project,
        world: &known.world.id,
        records: &known.records,
        nodes: &known.nodes,
        now,
        grace,
    });
    if g.output == OutputFormat::Text {
        print_gc_plan(&g.project, grace, &plan, now);
    }
    let mut destroyed: Vec<String> = Vec::new();
    let mut deleted: Vec<String> = Vec::new();
    let mut skipped: Vec<Value> = Vec::new();
    let mut errors: Vec<Value> = Vec::new();
    let mut first_failure: Option<Failure> = None;
    if !dry_run && !plan.is_empty() {
        let store = context::open_store(&home).await?;
        let ssh = context::ssh_config(&home, &store, &g.project).await?;
        for e in &plan.expired {
            let outcome: CliResult<Option<Report>> = async {
                let provider = known
                    .provider(&home, &store, &ssh, &g.project, &e.cluster)
                    .await?;
                let (listener, finish) = progress::listener(g.output);
                let ctx = context::engine_context(
                    g,
                    &home,
                    store.clone(),
                    ssh.clone(),
                    provider,
                    Some(listener),
                )
                .await?;
                let r = ops::gc_destroy(&ctx, &e.cluster).await;
                finish();
                Ok(r?)
            }
            .await;
            match outcome {
                Ok(Some(_)) => destroyed.push(e.cluster.clone()),
                Ok(None) => {
                    if g.output == OutputFormat::Text {
                        eprintln!("skipping cluster {}: no longer expired", e.cluster);
                    }
                    skipped.push(json!({"cluster": e.cluster, "reason": "no longer expired"}));
                }
                Err(f) => {
                    errors.push(json!({"cluster": e.cluster, "error": format!("{:#}", f.error)}));
                    if g.output == OutputFormat::Text {
                        eprintln!("gc: destroying cluster {} failed:", e.cluster);
                        output::print_failure(&f);
                    }
                    first_failure.get_or_insert(f);
                }
            }
        }
        // Orphans are deleted by the provider whose listing found them, one run per cluster
        // and scope.
        let mut by_cluster: BTreeMap<(&str, &str), OrphansOf> = BTreeMap::new();
        for o in &plan.orphans {
            let Some(scope) = known.inventory.scope_of(&o.node) else {
                continue;
            };
            by_cluster
                .entry((o.cluster.as_str(), scope.key.as_str()))
                .or_insert_with(|| (scope.provider.clone(), vec![]))
                .1
                .push(o.node.name.clone());
        }
        for ((cluster, _), (provider, names)) in by_cluster {
            let outcome: CliResult<Vec<String>> = async {
                let (listener, finish) = progress::listener(g.output);
                let ctx = context::engine_context(
                    g,
                    &home,
                    store.clone(),
                    ssh.clone(),
                    provider,
                    Some(listener),
                )
                .await?;
                let r = ops::gc_orphans(&ctx, cluster, &names, grace).await;
                finish();
                Ok(r?)
            }
            .await;
            match outcome {
                Ok(gone) => {
                    for n in names.iter().filter(|n| !gone.contains(n)) {
                        skipped.push(
                            json!({"node": n, "cluster": cluster, "reason": "no longer an orphan"}),
                        );
                    }
                    deleted.extend(gone);
                }
                Err(f) => {
                    errors.push(json!({"cluster": cluster, "nodes": names, "error": format!("{:#}", f.error)}));
                    if g.output == OutputFormat::Text {
                        eprintln!("gc: deleting orphans of {cluster} failed:");
                        output::print_failure(&f);
                    }
                    first_failure.get_or_insert(f);
                }
            }
        }
    }
    match g.output {
        OutputFormat::Json => output::print_json(&json!({
            "project": g.project,
            "dry_run": dry_run,
            "now": output::rfc3339(now),
            "grace_secs": grace.as_secs(),
            "expired": plan.expired.iter().map(|e| json!({
                "cluster": e.cluster,
                "tracked": e.tracked,
                "expires_at": output::rfc3339(e.expires_at),
                "nodes": e.nodes,
            })).collect::<Vec<_>>(),
            "orphans": plan.orphans.iter().map(orphan_json).collect::<Vec<_>>(),
            "waiting": plan.waiting.iter().map(orphan_json).collect::<Vec<_>>(),
            "foreign": plan.foreign.iter().map(|f| json!({
                "cluster": f.cluster,
                "owners": f.owners,
                "nodes": f.nodes,
                "expired": f.expired,
            })).collect::<Vec<_>>(),
            "destroyed": destroyed,
            "deleted": deleted,
            "skipped": skipped,
            "errors": errors,
        })),
        OutputFormat::Text if dry_run => {
            if !plan.is_empty() {
                println!("dry run: nothing changed (`gantry gc` does the above)");
            }
        }
        OutputFormat::Text if plan.is_empty() => {}
        OutputFormat::Text => println!(
            "gc: destroyed {} cluster(s){}, deleted {} orphaned node(s){}",
            destroyed.len(),
            if destroyed.is_empty() {
                String::new()
            } else {
                format!(" ({})", destroyed.join(", "))
            },
            deleted.len(),
            if deleted.is_empty() {
                String::new()
            } else {
                format!(" ({})", deleted.join(", "))
            },
        ),
    }
    match first_failure {
        Some(f) => Ok(f.code),
        None => Ok(exit::OK),
    }
}
