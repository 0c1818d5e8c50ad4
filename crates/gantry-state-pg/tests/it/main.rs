//! Integration tests for gantry-state-pg against one real PostgreSQL per test binary
//! (`scripts/services.sh start postgres`), each test in a database of its own.

mod conformance;
mod connect;
mod migrate;
mod store;
mod support;
mod tls;
