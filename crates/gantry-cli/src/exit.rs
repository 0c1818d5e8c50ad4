//! Exit codes and the error type that carries one.
//!
//! [`Exit`] is the one table of the codes `gantry` exits with: each has its meaning, which
//! README.md's "Exit codes" table repeats word for word (a test keeps them equal). Engine errors
//! reach it through their class ([`gantry_engine::EngineError::class`], the one place they are
//! classified); this file adds only the hints a person needs next. The constants below are the
//! same codes under the names the commands use.

use gantry_engine::ErrorClass;

/// The store this process opened, as shown to people (its URL without the password): named by
/// the hint of a state store failure in the middle of a command.
static STORE_SHOWN: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Remembers the (redacted) URL of the store this process opened, for [`Failure`]'s hints.
pub fn remember_store(shown: String) {
    let _ = STORE_SHOWN.set(shown);
}

/// Every exit code `gantry` uses (besides a remote command's own code, passed through by
/// `gantry ssh NODE -- CMD`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok,
    Failure,
    Usage,
    CommandFailed,
    Unreachable,
    Busy,
    NotConfirmed,
    LockLost,
    Secret,
    Interrupted,
}

#[cfg_attr(
    not(test),
    expect(
        dead_code,
        reason = "the table README.md's is checked against, in tests"
    )
)]
impl Exit {
    pub const ALL: [Exit; 10] = [
        Exit::Ok,
        Exit::Failure,
        Exit::Usage,
        Exit::CommandFailed,
        Exit::Unreachable,
        Exit::Busy,
        Exit::NotConfirmed,
        Exit::LockLost,
        Exit::Secret,
        Exit::Interrupted,
    ];

    pub const fn code(self) -> i32 {
        match self {
            Exit::Ok => 0,
            Exit::Failure => 1,
            Exit::Usage => 2,
            Exit::CommandFailed => 3,
            Exit::Unreachable => 4,
            Exit::Busy => 5,
            Exit::NotConfirmed => 6,
            Exit::LockLost => 7,
            Exit::Secret => 8,
            Exit::Interrupted => 130,
        }
    }

    /// What the code means, as README.md documents it.
    pub const fn meaning(self) -> &'static str {
        match self {
            Exit::Ok => "success",
            Exit::Failure => "failure (provider, state store, a step of a run)",
            Exit::Usage => "bad usage or input: invalid spec, unknown cluster or target",
            Exit::CommandFailed => {
                "a remote command exited non-zero or was killed on at least one node (`run`)"
            }
            Exit::Unreachable => {
                "at least one node could not be reached (connection, handshake, host key)"
            }
            Exit::Busy => "the cluster is locked by another run and the wait timed out",
            Exit::NotConfirmed => "a destructive change needs confirmation and none was given",
            Exit::LockLost => {
                "the run lost its cluster lock (lease lapsed, taken over): it stopped, and the \
                 store refused what it wrote after the takeover"
            }
            Exit::Secret => {
                "a secret cannot be opened: wrong key, tampered envelope, or its key provider is not configured"
            }
            Exit::Interrupted => "interrupted (Ctrl-C)",
        }
    }
}

impl From<ErrorClass> for Exit {
    fn from(c: ErrorClass) -> Exit {
        match c {
            ErrorClass::Invalid => Exit::Usage,
            ErrorClass::Busy => Exit::Busy,
            ErrorClass::NotConfirmed => Exit::NotConfirmed,
            ErrorClass::Interrupted => Exit::Interrupted,
            ErrorClass::LockLost => Exit::LockLost,
            ErrorClass::Secret => Exit::Secret,
            ErrorClass::Failed => Exit::Failure,
        }
    }
}

/// Success.
pub const OK: i32 = Exit::Ok.code();
/// Something failed (provider, state, a step of a run).
pub const FAILURE: i32 = Exit::Failure.code();
/// Bad usage or input: invalid spec, unknown cluster or target.
pub const USAGE: i32 = Exit::Usage.code();
/// A remote command exited non-zero (or was killed) on at least one node.
pub const COMMAND_FAILED: i32 = Exit::CommandFailed.code();
/// At least one node could not be reached (connection, handshake, host key).
pub const TRANSPORT: i32 = Exit::Unreachable.code();
/// A destructive change needs confirmation and none was given.
pub const NOT_CONFIRMED: i32 = Exit::NotConfirmed.code();
/// A secret cannot be opened (wrong key, tampered, provider not configured).
pub const SECRET: i32 = Exit::Secret.code();
/// Interrupted by Ctrl-C.
pub const INTERRUPTED: i32 = Exit::Interrupted.code();

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
        let code = Exit::from(e.class()).code();
        let hint: Option<String> = match &e {
            E::LockTimeout { .. } => Some("wait for the other run to finish, or raise --lock-timeout; a lock whose process is gone is taken over; another machine's lapses within 30 s".into()),
            E::Interrupted => Some("run the same command again to resume; it converges".into()),
            E::LockLost { cluster, .. } => Some(format!("another run may have changed cluster {cluster} meanwhile: `gantry runs {cluster}` shows who; run the command again to converge")),
            E::NeedsConfirmation { .. } => Some("re-run with --yes to allow it".into()),
            E::ClusterNotFound { .. } => Some("`gantry ls` lists the clusters of this project".into()),
            E::NameCollision { .. } => Some("rename the pool or the cluster so that `<cluster>-<pool>` differs from every other cluster's".into()),
            E::ForeignCluster { .. } => Some("gantry never touches another world's resources: choose another cluster name (or --project), or ask their owner".into()),
            E::StaleNodes { cluster, .. } => Some(format!("`gantry destroy {cluster}` removes them (and the record), or `gantry gc` deletes them once they are older than its grace period")),
            E::NoNodes { nodes, .. } => Some(format!("its nodes are: {nodes}")),
            E::EmptyCluster { .. } => Some("`gantry ls` lists the clusters of this project".into()),
            E::AmbiguousIndex { cluster, index, .. } => Some(format!("name the pool: {cluster}/POOL-{index}")),
            E::RecordUnreadable { cluster, .. } => Some(format!("a newer gantry may have written it: use that version; or `gantry up -f SPEC` with cluster {cluster}'s spec records it again")),
            E::LifetimeTooLong { .. } => Some("give a shorter duration, or `extend --from-now` to count from now instead of from the current expiry".into()),
            E::Provider(p) => p.hint.clone(),
            E::State(_) => Some(match STORE_SHOWN.get() {
                Some(url) => format!("the state store is {url}: `gantry state status` tells whether it answers; once it does, run the command again (it converges)"),
                None => "`gantry state status` tells whether the state store answers; once it does, run the command again (it converges)".into(),
            }),
            E::ProviderUnavailable { hint, .. } => hint.clone(),
            E::StepsFailed { .. } => Some("`gantry logs RUN` shows every event; re-run the command to retry what failed".into()),
            E::Secrets(se) => secrets_hint(se),
            E::SecretUnreadable { .. } => Some("the store holds something gantry did not write under that name: restore it from a backup; see docs/secrets.md".into()),
            _ => None,
        };
        let f = Failure::new(code, e);
        match hint {
            Some(h) => f.hint(h),
            None => f,
        }
    }
}

/// What to do about a secrets error.
pub fn secrets_hint(e: &gantry_secrets::SecretsError) -> Option<String> {
    Some(match e {
        gantry_secrets::SecretsError::WrongKey { .. } | gantry_secrets::SecretsError::UnknownProvider { .. } => {
            "set GANTRY_KEY_PROVIDER to the provider and key that sealed it (the same on every machine sharing the store); \
             after changing providers, `gantry secrets rotate --from OLD-SPEC` moves every secret to the new one"
                .into()
        }
        gantry_secrets::SecretsError::Tampered { .. } => {
            "the envelope in the state store was changed or corrupted: restore it from a backup, and find out who can write to the store (docs/secrets.md)".into()
        }
        gantry_secrets::SecretsError::UnsupportedVersion { .. } => "upgrade gantry".into(),
        gantry_secrets::SecretsError::MissingInput { .. } => {
            "see docs/secrets.md for the variables each key provider reads".into()
        }
        _ => return None,
    })
}

pub type CliResult<T = i32> = Result<T, Failure>;

#[cfg(test)]
mod tests {
    use super::*;

    /// README.md's "Exit codes" table lists exactly [`Exit`]'s codes and meanings.
    #[test]
    fn readme_documents_every_exit_code_as_the_table_says() {
        let readme = include_str!("../../../README.md");
        let section = readme
            .split("\n## Exit codes\n")
            .nth(1)
            .expect("README.md has an `## Exit codes` section");
        let documented: Vec<(i32, String)> = section
            .lines()
            .take_while(|l| !l.starts_with("## "))
            .filter_map(|l| {
                let cells: Vec<&str> = l.trim().trim_matches('|').split('|').collect();
                let code = cells.first()?.trim().parse().ok()?;
                Some((code, cells.get(1)?.trim().to_string()))
            })
            .collect();
        let table: Vec<(i32, String)> = Exit::ALL
            .iter()
            .map(|e| (e.code(), e.meaning().to_string()))
            .collect();
        assert_eq!(documented, table);
    }

    #[test]
    fn engine_errors_keep_the_codes_they_had() {
        use gantry_engine::EngineError as E;
        let cases: Vec<(E, i32)> = vec![
            (E::Interrupted, 130),
            (
                E::NeedsConfirmation {
                    count: 1,
                    names: "a".into(),
                },
                6,
            ),
            (
                E::NotConfirmed {
                    count: 1,
                    names: "a".into(),
                },
                6,
            ),
            (
                E::ClusterNotFound {
                    project: "p".into(),
                    cluster: "c".into(),
                },
                2,
            ),
            (
                E::LockTimeout {
                    cluster: "c".into(),
                    holder: "h".into(),
                    expires_in_secs: 1,
                    waited_secs: 1,
                },
                5,
            ),
            (
                E::StepsFailed {
                    failed: 1,
                    total: 2,
                    first: "x".into(),
                    source: None,
                },
                1,
            ),
            (
                E::LockLost {
                    cluster: "c".into(),
                    taken_over: true,
                },
                7,
            ),
            (
                E::ProviderMismatch {
                    cluster: "c".into(),
                    existing: "aws".into(),
                    wanted: "local".into(),
                },
                1,
            ),
        ];
        for (e, code) in cases {
            let name = format!("{e:?}");
            assert_eq!(Failure::from(e).code, code, "{name}");
        }
    }
}
