//! Integration tests of the built `gantry` binary (one test binary; see TESTING.md).
//!
//! Every test works in its own temporary `GANTRY_HOME` and leaves nothing running: the
//! [`support::Gantry`] guard destroys its clusters and kills leftover node processes.

mod aws;
mod aws_crash;
mod blueprints;
mod builtin_blueprints;
mod conformance;
mod crash;
mod docker;
mod gc;
mod interrupt;
mod inventory;
mod lifecycle;
mod lifetime;
mod lock;
// Shared with aws_faults and aws_crash; until those are listed here, parts of it are unused.
#[allow(dead_code)]
mod moto;
mod openssh;
mod scale;
mod spec_errors;
mod support;
