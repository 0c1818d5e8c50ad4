//! The one error enum of `gantry-core`, plus the located spec error that `validate` prints.

use std::fmt;

/// A problem in a spec, located at `file:line:column` with a suggestion for the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecErrorItem {
    /// 1-based line; 0 when unknown.
    pub line: usize,
    /// 1-based column; 0 when unknown.
    pub column: usize,
    /// What is wrong, as a lowercase fragment.
    pub message: String,
    /// How to fix it.
    pub hint: Option<String>,
}

/// All problems found in one spec file (validation keeps going to report every one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    /// The file name as the user gave it (or `<stdin>`).
    pub file: String,
    pub items: Vec<SpecErrorItem>,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, item) in self.items.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(
                f,
                "{}:{}:{}: {}",
                self.file, item.line, item.column, item.message
            )?;
            if let Some(hint) = &item.hint {
                write!(f, "\n  hint: {hint}")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for SpecError {}

/// Errors of the core crate.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("invalid spec\n{0}")]
    Spec(#[from] SpecError),
    #[error("invalid name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },
    #[error("invalid target {target:?}: {reason}")]
    InvalidTarget { target: String, reason: String },
    #[error("invalid duration {input:?}: {reason}")]
    InvalidDuration { input: String, reason: String },
    /// A stored name outside its closed set (see [`crate::status`]).
    #[error(
        "unknown {what} {value:?}: this gantry knows {expected} (was it written by a newer gantry?)"
    )]
    UnknownName {
        what: &'static str,
        value: String,
        expected: String,
    },
}
