//! Typed events of a run. The engine emits them; renderers (TTY, plain, JSON lines) and the
//! state recorder consume them. Serialised with a `type` tag; the JSON form is a stable,
//! documented interface (`--output json`).

use serde::{Deserialize, Serialize};

use crate::status::{Level, RunKind, RunStatus};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    RunStarted {
        run_id: String,
        kind: RunKind,
        cluster: String,
        steps: usize,
    },
    LockWaiting {
        cluster: String,
        holder: String,
        expires_in_secs: u64,
    },
    StepStarted {
        step: String,
        node: Option<String>,
        attempt: u32,
    },
    StepRetrying {
        step: String,
        node: Option<String>,
        attempt: u32,
        delay_ms: u64,
        error: String,
    },
    StepFinished {
        step: String,
        node: Option<String>,
        elapsed_ms: u64,
    },
    StepSkipped {
        step: String,
        node: Option<String>,
        reason: String,
    },
    /// More steps joined the run after `RunStarted` counted its own: `up`'s blueprint step
    /// instances, known only once every node answers. A run's steps are `RunStarted::steps`
    /// plus every `StepsAdded::steps`; each ends in one `StepFinished`, `StepFailed` or
    /// `StepSkipped` (unless the run is interrupted).
    StepsAdded {
        steps: usize,
    },
    StepFailed {
        step: String,
        node: Option<String>,
        error: String,
    },
    Message {
        level: Level,
        text: String,
    },
    Interrupted {
        reason: String,
    },
    RunFinished {
        run_id: String,
        status: RunStatus,
        elapsed_ms: u64,
    },
}

impl Event {
    /// The node the event is about, if any.
    pub fn node(&self) -> Option<&str> {
        match self {
            Event::StepStarted { node, .. }
            | Event::StepRetrying { node, .. }
            | Event::StepFinished { node, .. }
            | Event::StepSkipped { node, .. }
            | Event::StepFailed { node, .. } => node.as_deref(),
            _ => None,
        }
    }
}
