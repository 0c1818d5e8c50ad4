//! Integration tests of the built `gantry` binary (one test binary; see docs/testing.md).
//!
//! Every test works in its own temporary `GANTRY_HOME` and leaves nothing running: the
//! [`support::Gantry`] guard destroys its clusters and kills leftover node processes.

mod agent_limits;
mod app;
mod aws;
mod aws_crash;
mod aws_faults;
mod aws_ls;
mod blueprint_secrets;
mod blueprints;
mod builtin_blueprints;
mod conformance;
mod crash;
mod docker;
mod fencing;
mod gc;
mod interrupt;
mod inventory;
mod lifecycle;
mod lifetime;
mod local_hardening;
mod lock;
#[expect(
    dead_code,
    reason = "shared by aws, aws_crash and aws_faults; `port`, `log`, `reset` are for debugging"
)]
mod moto;
mod names;
mod old_records;
mod openssh;
// The hostile neighbour of the hardening tests (used by several modules).
mod other_user;
mod project_flag;
mod rotate_ssh_key;
mod scale;
mod secrets_at_rest;
mod spec_errors;
mod state;
mod state_migrate;
mod store_faults;
mod support;
mod team_docker;
mod team_store;
