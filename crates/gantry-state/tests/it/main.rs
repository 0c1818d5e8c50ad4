//! Integration tests for gantry-state: one binary, one module per area.

mod conformance;
mod migrate;
mod sqlite;
