//! Exit codes (documented in README.md) and the error type that carries one.

/// Success.
pub const OK: i32 = 0;
/// Something failed (provider, state, a step of a run).
pub const FAILURE: i32 = 1;
/// Bad usage or input: invalid spec, unknown cluster or target.
pub const USAGE: i32 = 2;
/// A remote command exited non-zero (or was killed) on at least one node.
pub const COMMAND_FAILED: i32 = 3;
/// At least one node could not be reached (connection, handshake, host key).
pub const TRANSPORT: i32 = 4;
/// The cluster is locked by another run and the wait timed out.
pub const BUSY: i32 = 5;
/// A destructive change needs confirmation and none was given.
pub const NOT_CONFIRMED: i32 = 6;
/// Interrupted by Ctrl-C.
pub const INTERRUPTED: i32 = 130;

/// An error on its way out of the binary.
#[derive(Debug)]
pub struct Failure {
    pub code: i32,
    pub error: anyhow::Error,
    pub hints: Vec<String>,
}

impl Failure {
    pub fn new(code: i32, error: impl Into<anyhow::Error>) -> Self {
        Failure {
            code,
            error: error.into(),
            hints: vec![],
        }
    }

    pub fn hint(mut self, h: impl Into<String>) -> Self {
        self.hints.push(h.into());
        self
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::new(FAILURE, e)
    }
}

impl From<gantry_engine::EngineError> for Failure {
    fn from(e: gantry_engine::EngineError) -> Self {
        use gantry_engine::EngineError as E;
        match &e {
            E::LockTimeout { .. } => Failure::new(BUSY, e)
                .hint("wait for the other run to finish, or raise --lock-timeout; a lock whose process is gone is taken over; another machine's lapses within 30 s"),
            E::Interrupted => Failure::new(INTERRUPTED, e).hint("run the same command again to resume; it converges"),
            E::NeedsConfirmation { .. } => Failure::new(NOT_CONFIRMED, e).hint("re-run with --yes to allow it"),
            E::NotConfirmed { .. } => Failure::new(NOT_CONFIRMED, e),
            E::ClusterNotFound { .. } => Failure::new(USAGE, e).hint("`gantry ls` lists the clusters of this project"),
            E::NameCollision { .. } => Failure::new(USAGE, e).hint("rename the pool or the cluster so that `<cluster>-<pool>` differs from every other cluster's"),
            E::ForeignCluster { .. } => Failure::new(USAGE, e).hint("gantry never touches another world's resources: choose another cluster name (or --project), or ask their owner"),
            E::StaleNodes { cluster, .. } => {
                let hint = format!("`gantry destroy {cluster}` removes them (and the record), or `gantry gc` deletes them once they are older than its grace period");
                Failure::new(USAGE, e).hint(hint)
            }
            E::NoNodes { .. } => Failure::new(USAGE, e).hint("`gantry show CLUSTER` lists its nodes"),
            E::BlueprintInvalid(_) | E::BlueprintLoad { .. } => Failure::new(USAGE, e),
            E::LifetimeTooLong { .. } => Failure::new(USAGE, e)
                .hint("give a shorter duration, or `extend --from-now` to count from now instead of from the current expiry"),
            E::Provider(p) => {
                let hint = p.hint.clone();
                let f = Failure::new(FAILURE, e);
                match hint {
                    Some(h) => f.hint(h),
                    None => f,
                }
            }
            E::StepsFailed { .. } => {
                Failure::new(FAILURE, e).hint("`gantry logs RUN` shows every event; re-run the command to retry what failed")
            }
            _ => Failure::new(FAILURE, e),
        }
    }
}

pub type CliResult<T = i32> = Result<T, Failure>;
