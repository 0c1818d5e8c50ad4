//! gantry's state on a PostgreSQL server: the store a team shares.
//!
//! [`PostgresStore`] implements [`gantry_state::StateStore`] with the same records and the same
//! rules as the embedded SQLite store, and passes the same conformance suite. It lives in its
//! own crate so that `gantry-state` (and everything that only needs SQLite) never builds a
//! PostgreSQL driver, TLS stack or connection pool.
//!
//! What differs from SQLite, and why:
//! - Several machines write at once, so every read-modify-write is one statement or one
//!   transaction that takes a row lock (event numbering, fencing tokens, world id) or a
//!   per-project advisory lock (the inventory cache's guarded put); none relies on a
//!   database-wide write lock.
//! - Lease times come from the database server's clock (`clock_timestamp()`), not from each
//!   client's: machines whose clocks disagree still agree on when a lease ends.
//! - Timestamps are `timestamptz`, microsecond precision (the precision the model promises).

mod error;
mod schema;
mod store;
mod tls;
mod url;

pub use store::PostgresStore;
