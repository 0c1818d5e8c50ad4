//! YAML → validated [`ClusterSpec`], with every problem located.

use std::time::Duration;

use crate::{ClusterSpec, CoreError, SpecError};

/// Parses and validates a spec. `file` is used only to label errors.
pub fn parse(file: &str, text: &str) -> Result<ClusterSpec, SpecError> {
    let _ = text;
    Err(SpecError {
        file: file.to_string(),
        items: vec![],
    })
}

/// `12h`, `30m`, `4h30m`, `2d`.
pub fn parse_duration(s: &str) -> Result<Duration, CoreError> {
    humantime::parse_duration(s).map_err(|e| CoreError::InvalidDuration {
        input: s.into(),
        reason: e.to_string(),
    })
}
