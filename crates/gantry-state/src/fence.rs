//! Fencing: a cluster lock's token carried by every write made under the lock.
//!
//! A lease alone does not stop a holder that stalled (a laptop asleep, a process stopped, a GC
//! pause) past its expiry from writing after another process took the lock: the stale holder
//! does not know yet. So a run writes through [`StateStore::fenced`](crate::StateStore::fenced),
//! a handle of the same store whose every write first checks, *inside the write's own
//! transaction*, that the newest token issued for the lock is still the fence's token. The
//! check and the write commit together or not at all: once a newer token has been issued, no
//! write of the old holder lands, whatever its timing.
//!
//! Every store keeps the last token of each key forever (SQLite and PostgreSQL: the `locks`
//! row, never deleted; etcd: `P/lock-tokens/<key>`), so "newest issued" is one read in the same
//! transaction as the write.

use serde::{Deserialize, Serialize};

use crate::model::Lease;

/// The lock a fenced handle writes under, and the token its writes carry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Fence {
    /// The lock's key (`cluster/<project>/<name>` for a cluster lock).
    pub key: String,
    /// The fencing token of the lease the writer holds.
    pub token: u64,
}

impl Fence {
    pub fn new(key: impl Into<String>, token: u64) -> Fence {
        Fence {
            key: key.into(),
            token,
        }
    }

    /// The fence of a held lease.
    pub fn of(lease: &Lease) -> Fence {
        Fence::new(lease.key.clone(), lease.token)
    }

    /// The error of a write refused because `newest` (0: none recorded) is not this fence's
    /// token.
    pub fn refused(&self, newest: u64) -> crate::StateError {
        crate::StateError::Fenced {
            key: self.key.clone(),
            token: self.token,
            newest,
        }
    }
}
