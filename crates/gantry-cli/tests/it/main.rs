//! Integration tests of the built `gantry` binary (one test binary; see TESTING.md).
//!
//! Every test works in its own temporary `GANTRY_HOME` and leaves nothing running: the
//! [`support::Gantry`] guard destroys its clusters and kills leftover node processes.

mod lifecycle;
mod openssh;
mod support;
