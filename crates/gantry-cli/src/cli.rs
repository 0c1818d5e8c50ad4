//! The command-line interface (clap derive). Every flag with an environment variable names it
//! through `env_vars`, so the docs and the parser cannot drift apart.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::env_vars as env;

#[derive(Debug, Parser)]
#[command(
    name = "gantry",
    version,
    about = "Provision and operate clusters of machines on any provider"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// Where gantry keeps its state, keys and local nodes.
    #[arg(long, global = true, env = env::GANTRY_HOME, value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// Where the state lives: sqlite://PATH, postgres://USER@HOST/DB or etcd://HOST:PORT
    /// [default: sqlite://$GANTRY_HOME/state.db].
    #[arg(long, global = true, env = env::GANTRY_STATE, value_name = "URL", hide_env_values = true)]
    pub state: Option<String>,
    /// Project (namespace) to act in: named like a cluster (lowercase letters, digits and '-').
    #[arg(long, global = true, env = env::GANTRY_PROJECT, default_value = "default", value_parser = project_name)]
    pub project: String,
    /// Output format.
    #[arg(long, short = 'o', global = true, env = env::GANTRY_OUTPUT, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// How long to wait for a cluster locked by another run.
    #[arg(long, global = true, env = env::GANTRY_LOCK_TIMEOUT, default_value = "120s", value_parser = humantime::parse_duration)]
    pub lock_timeout: std::time::Duration,
    /// The cluster lock's lease in milliseconds, for tests that need it to lapse quickly
    /// (clamped to 500 ms..=10 min). Hidden: the default (30 s) is what real runs use.
    #[arg(long, global = true, hide = true, env = env::GANTRY_LOCK_TTL_MS, default_value = "30000", value_parser = lock_ttl_ms)]
    pub lock_ttl: std::time::Duration,
    /// More logging (-v, -vv).
    #[arg(long, short = 'v', global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// `--project` becomes a directory under `GANTRY_HOME` (`projects/<project>/`, with the key)
/// and part of every resource name and tag, so it follows the naming rules of a cluster: an
/// absolute path or `..` would put the project's key and pins anywhere.
fn project_name(s: &str) -> Result<String, String> {
    gantry_core::names::validate_name(s)
        .map(|()| s.to_string())
        .map_err(|e| format!("{e} (a project is named like a cluster)"))
}

/// `GANTRY_LOCK_TTL_MS`: whole milliseconds, brought within the engine's bounds.
fn lock_ttl_ms(s: &str) -> Result<std::time::Duration, String> {
    let ms: u64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of milliseconds"))?;
    Ok(gantry_engine::lock::clamp_lease_ttl(
        std::time::Duration::from_millis(ms),
    ))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or converge a cluster to its spec.
    Up(SpecArgs),
    /// Show what `up` would change.
    Plan(SpecArgs),
    /// Check a spec file and report every problem with file:line:column.
    Validate(SpecArgs),
    /// Delete a cluster's nodes and resources (found by tags).
    /// Several at once: name them, or --all / --expired (both ask too, unless --yes).
    Destroy {
        clusters: Vec<String>,
        /// Every cluster of the project.
        #[arg(long, conflicts_with = "clusters")]
        all: bool,
        /// Only clusters whose lifetime is over (of the named ones, or of the project).
        #[arg(long)]
        expired: bool,
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Extend a cluster's lifetime: expiry = max(now, expiry) + DURATION (record and tags).
    Extend {
        cluster: String,
        /// How much longer, e.g. 4h, 90m, 2d (at most 10y).
        #[arg(value_parser = lifetime_duration)]
        duration: std::time::Duration,
        /// Set expiry = now + DURATION instead (may shorten it).
        #[arg(long)]
        from_now: bool,
    },
    /// Destroy expired clusters and delete orphaned nodes (tagged for the project, no cluster).
    Gc {
        /// Print what would be done; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Orphans younger than this are left alone.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        grace: std::time::Duration,
    },
    /// Export nodes for other tools (all clusters of the project without CLUSTER).
    Inventory {
        cluster: Option<String>,
        #[arg(long, value_enum, default_value_t = InventoryFormat::Ansible)]
        format: InventoryFormat,
        /// Target port for `--format prometheus`.
        #[arg(long, default_value_t = 9100)]
        port: u16,
        /// (json) Print the values of secret blueprint outputs instead of `********`.
        #[arg(long)]
        show_secrets: bool,
    },
    /// Software recipes: list the built-ins, show one, render what it runs on a node.
    Blueprint {
        #[command(subcommand)]
        command: BlueprintCommand,
    },
    /// The state store: where it is and whether it answers.
    State {
        #[command(subcommand)]
        command: StateCommand,
    },
    /// Secrets in the state store (sealed by the key provider, GANTRY_KEY_PROVIDER).
    Secrets {
        #[command(subcommand)]
        command: SecretsCommand,
    },
    /// List clusters: records, and nodes found by the project's tags (local, the default Docker
    /// engine, AWS regions).
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Show a cluster's nodes and its blueprints' outputs.
    Show {
        cluster: String,
        /// Print the values of secret outputs (passwords, URLs with them) instead of `********`.
        #[arg(long)]
        show_secrets: bool,
    },
    /// Run a command on nodes: CLUSTER, CLUSTER/N, CLUSTER/NODE or CLUSTER:POOL.
    Run {
        target: String,
        /// Concurrency (nodes at once).
        #[arg(long, env = env::GANTRY_CONCURRENCY, default_value_t = 64)]
        concurrency: usize,
        /// The command (after `--`), run by the node's shell.
        #[arg(last = true, required = true, num_args = 1..)]
        command: Vec<String>,
    },
    /// Copy a local file to nodes (SFTP; Docker nodes: the archive API).
    Put {
        target: String,
        local: PathBuf,
        remote: String,
        #[arg(long, env = env::GANTRY_CONCURRENCY, default_value_t = 64)]
        concurrency: usize,
    },
    /// Copy a file from nodes (SFTP; Docker nodes: the archive API). With several nodes, LOCAL is a directory and each node's
    /// copy goes to LOCAL/NODE/FILE.
    Get {
        target: String,
        remote: String,
        local: PathBuf,
        #[arg(long, env = env::GANTRY_CONCURRENCY, default_value_t = 64)]
        concurrency: usize,
    },
    /// Open a shell (with a pty) on a node, or run a command there.
    Ssh {
        target: String,
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Print an OpenSSH client config for a cluster (`ssh -F <(gantry ssh-config demo) demo-db-1`).
    SshConfig { cluster: String },
    /// Stop nodes; they keep their files and addresses.
    Stop { target: String },
    /// Start stopped nodes.
    Start { target: String },
    /// List runs (newest first).
    Runs {
        cluster: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Replay the events of a run.
    Logs { run: String },
    /// Print shell completions.
    Completions { shell: clap_complete::Shell },
    /// Run a local node's agent (started by the local provider).
    #[command(hide = true)]
    Agent {
        #[arg(long)]
        node_dir: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct SpecArgs {
    /// The cluster spec (YAML); `-` for standard input.
    #[arg(long, short = 'f', value_name = "FILE")]
    pub file: PathBuf,
    /// Do not ask before removing nodes (shrink).
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// (up) Expire at now + this, overriding the spec's lifetime (e.g. 4h; at most 10y).
    #[arg(long, value_parser = lifetime_duration)]
    pub lifetime: Option<std::time::Duration>,
    /// (up) Let blueprints install the packages their artifacts name (apt-get) when missing.
    #[arg(long, env = env::GANTRY_ALLOW_PACKAGES, value_parser = clap::builder::BoolishValueParser::new())]
    pub allow_packages: bool,
}

/// `gantry ls`.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// Also list this AWS region (repeatable, or comma-separated); added to the regions of the
    /// tracked AWS clusters and to GANTRY_AWS_REGIONS.
    #[arg(long = "region", value_name = "REGION", value_delimiter = ',')]
    pub regions: Vec<String>,
    /// Re-list every region now instead of using cached listings.
    #[arg(long)]
    pub refresh: bool,
    /// Serve a region's cached listing while it is younger than this (`0s`: never).
    #[arg(long, env = env::GANTRY_LS_MAX_AGE, value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration)]
    pub max_age: std::time::Duration,
}

/// A lifetime (`4h`, `2d`): greater than zero and at most `gantry_core::spec::MAX_LIFETIME`,
/// so a huge value is a usage error, never an overflowing expiry.
fn lifetime_duration(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    gantry_core::spec::check_lifetime(d)?;
    Ok(d)
}

/// `gantry inventory --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InventoryFormat {
    /// Ansible INI inventory: a group per cluster and per pool (CLUSTER_POOL).
    Ansible,
    /// OpenSSH client config (as `gantry ssh-config`).
    SshConfig,
    /// `ADDRESS NAME` lines.
    Hosts,
    /// Nodes as in `show --output json`.
    Json,
    /// Prometheus file_sd JSON.
    Prometheus,
}

/// `gantry state ...`.
#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// The store's kind, URL (without its password), schema version, health and latency.
    /// Exits 1 when the store does not answer.
    Status,
    /// Copy every record of the store in use (clusters, nodes, runs, steps, events, inventory)
    /// into the store at --to, then compare both sides' counts and content hashes per kind.
    /// Refuses while a run holds a lock in the source (exit 5), and a target that holds records
    /// or is another gantry world unless --force (exit 6); exits 1 when the two sides differ.
    Migrate(MigrateArgs),
}

/// `gantry state migrate`.
#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// The store to copy into: sqlite://PATH, postgres://USER[:PASSWORD]@HOST/DB or
    /// etcd://HOST:PORT[,HOST:PORT…][/PREFIX].
    #[arg(long, value_name = "URL")]
    pub to: String,
    /// Copy into a store that already holds records (e.g. to finish an interrupted migrate:
    /// a re-run converges) or that is another gantry world (it keeps its own world id).
    #[arg(long)]
    pub force: bool,
}

/// `gantry secrets ...`.
#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Re-wrap every secret of the state store under the current key provider
    /// (GANTRY_KEY_PROVIDER). Secrets already under it are left alone, so it can be re-run after
    /// an interruption; the secrets themselves are never decrypted, only their data keys move.
    Rotate {
        /// A provider secrets may still be sealed under (`keyfile:OLD-PATH`, `passphrase` with
        /// GANTRY_OLD_PASSPHRASE, `openbao://transit/OLD-KEY`); repeat for several.
        #[arg(long = "from", value_name = "SPEC")]
        from: Vec<String>,
    },
    /// Replace the project's SSH key (for the day someone leaves the team): a new key is
    /// authorized on every node reached over SSH, the old one removed from them, and the
    /// store's key replaced. Nodes it cannot reach (stopped) keep the old key and the rotation
    /// stays pending: run it again once they are up.
    RotateSshKey {
        /// Nodes at once.
        #[arg(long, env = env::GANTRY_CONCURRENCY, default_value_t = 64)]
        concurrency: usize,
    },
}

/// `gantry blueprint ...`.
#[derive(Debug, Subcommand)]
pub enum BlueprintCommand {
    /// The built-in blueprints.
    Ls,
    /// Params, artifacts and steps of a blueprint (a built-in name or a directory).
    Show { name: String },
    /// Exactly what each step of a spec's blueprint would run or write on one node, in order.
    Render {
        /// The blueprint (its name, or the name/path as written in the spec).
        name: String,
        /// The node (name, N or POOL-N).
        #[arg(long)]
        node: String,
        /// The cluster spec that applies the blueprint.
        #[arg(long, short = 'f', value_name = "FILE")]
        file: PathBuf,
    },
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    fn project(args: &[&str]) -> Result<String, clap::Error> {
        let mut argv = vec!["gantry"];
        argv.extend_from_slice(args);
        argv.push("ls");
        Cli::try_parse_from(argv).map(|c| c.global.project)
    }

    #[test]
    fn project_is_named_like_a_cluster() {
        assert_eq!(project(&[]).unwrap(), "default");
        assert_eq!(project(&["--project", "team-a2"]).unwrap(), "team-a2");
        for bad in ["/etc", "../other", "a/b", "", "Team", "x.y", "-a", "a-"] {
            let arg = format!("--project={bad}");
            let err = project(&[&arg]).expect_err(bad);
            assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation, "{bad}");
            let text = err.to_string();
            assert!(
                text.contains("--project") && text.contains("named like a cluster"),
                "{bad}: {text}"
            );
        }
    }
}
