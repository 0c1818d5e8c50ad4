//! The IO-free heart of gantry: the cluster spec and its validation, the blueprint format,
//! names, tags, targets, run events and secret values that cannot be printed.
//!
//! This crate exists so that everything gantry *decides* can be tested without tokio, a
//! filesystem or a provider. It depends on no other gantry crate and performs no IO: callers
//! hand it text and get typed values or errors that point at `file:line:column`.

pub mod blueprint;
pub mod error;
pub mod event;
pub mod names;
pub mod reader;
pub mod secret;
pub mod spec;
pub mod status;
pub mod tags;
pub mod target;

pub use error::{CoreError, SpecError, SpecErrorItem};
pub use names::{NodeName, node_name, parse_node_name, validate_name, validate_user};
pub use spec::{
    AllowRule, ClusterSpec, NetworkSpec, PoolSpec, ProviderOptions, ProviderSection, ProviderSpec,
    Readiness, ReadinessRule,
};
pub use tags::Tags;
pub use target::Target;

/// The default project when none is configured.
pub const DEFAULT_PROJECT: &str = "default";

/// `apiVersion` accepted by this build.
pub const API_VERSION: &str = "gantry/v1";
