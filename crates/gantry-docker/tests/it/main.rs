//! gantry-docker's integration tests, in one binary: the provider against a real Docker engine
//! (`engine`).

mod engine;
