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
    /// Project (namespace) to act in.
    #[arg(long, global = true, env = env::GANTRY_PROJECT, default_value = "default")]
    pub project: String,
    /// Output format.
    #[arg(long, short = 'o', global = true, env = env::GANTRY_OUTPUT, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// How long to wait for a cluster locked by another run.
    #[arg(long, global = true, env = env::GANTRY_LOCK_TIMEOUT, default_value = "120s", value_parser = humantime::parse_duration)]
    pub lock_timeout: std::time::Duration,
    /// More logging (-v, -vv).
    #[arg(long, short = 'v', global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
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
    Destroy {
        cluster: String,
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// List clusters.
    #[command(alias = "list")]
    Ls,
    /// Show a cluster's nodes.
    Show { cluster: String },
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
    /// Copy a local file to nodes (SFTP).
    Put {
        target: String,
        local: PathBuf,
        remote: String,
        #[arg(long, env = env::GANTRY_CONCURRENCY, default_value_t = 64)]
        concurrency: usize,
    },
    /// Copy a file from nodes (SFTP). With several nodes, LOCAL is a directory and each node's
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
}
