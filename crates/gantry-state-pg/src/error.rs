//! Turning driver and pool failures into [`StateError`]s that name the operation.
//!
//! Every failure is a [`StateError::Backend`] with the operation that hit it and the driver's
//! error as its source; the driver never sees a URL, so no source can carry the password.

use deadpool_postgres::PoolError;
use gantry_state::StateError;

/// The backend name in errors and [`StateStore::kind`](gantry_state::StateStore::kind).
pub(crate) const BACKEND: &str = "postgres";

/// Wraps a driver error as the failure of `op`.
pub(crate) fn pg_err(op: &'static str) -> impl FnOnce(tokio_postgres::Error) -> StateError {
    move |source| StateError::Backend {
        backend: BACKEND,
        op,
        source: Box::new(source),
    }
}

pub(crate) fn pool_err(op: &'static str, e: PoolError) -> StateError {
    match e {
        PoolError::Backend(source) => pg_err(op)(source),
        other => StateError::Backend {
            backend: BACKEND,
            op,
            source: Box::new(other),
        },
    }
}
