//! The closed sets of names gantry records and emits: what kind a run is, how a run, a step or
//! a cluster stands, how loud a message is.
//!
//! Each is stored as text (SQLite columns, event JSON) under exactly the name earlier versions
//! wrote as free text, so state files written before these types existed still read. A stored
//! name this version does not know (written by hand, or by a newer gantry) is an error that
//! names it ([`CoreError::UnknownName`]), never silently another value: a closed set is what
//! lets every `match` on it be checked by the compiler.

use std::fmt;
use std::str::FromStr;

use crate::CoreError;

/// Declares a closed enum with its stored names (serde uses them too).
macro_rules! named {
    (
        $(#[$meta:meta])*
        pub enum $name:ident ($what:literal) {
            $($(#[$vmeta:meta])* $variant:ident = $text:literal,)*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant,)*
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            /// The stored name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = CoreError;

            fn from_str(s: &str) -> Result<Self, CoreError> {
                match s {
                    $($text => Ok($name::$variant),)*
                    _ => Err(CoreError::UnknownName {
                        what: $what,
                        value: s.to_string(),
                        expected: [$($text),*].join(", "),
                    }),
                }
            }
        }
    };
}

named! {
    /// What a run does (the `kind` of a run record and of [`Event::RunStarted`](crate::event::Event)).
    pub enum RunKind ("run kind") {
        Up = "up",
        Destroy = "destroy",
        Stop = "stop",
        Start = "start",
        Extend = "extend",
        /// gc's destroy of an expired cluster or delete of orphaned nodes.
        Gc = "gc",
        /// `gantry secrets rotate-ssh-key` on the cluster's nodes.
        RotateSshKey = "rotate-ssh-key",
    }
}

named! {
    /// Where a run stands (a run record's `status`, [`Event::RunFinished`](crate::event::Event)).
    pub enum RunStatus ("run status") {
        Running = "running",
        Succeeded = "succeeded",
        Failed = "failed",
        /// Cancelled by the user (Ctrl-C) or stopped by a lost lock.
        Interrupted = "interrupted",
        /// Left `running` by a process that died or lost its cluster lock (its writes are then
        /// refused); closed by the next run of its cluster.
        Abandoned = "abandoned",
    }
}

named! {
    /// Where one step of a run stands (a checkpoint's `status`; only `done` counts).
    pub enum StepStatus ("step status") {
        Running = "running",
        Done = "done",
        Failed = "failed",
        Skipped = "skipped",
    }
}

named! {
    /// Where a cluster stands, as its record says.
    pub enum ClusterStatus ("cluster status") {
        /// `up` has recorded it and is creating or changing its nodes.
        Creating = "creating",
        /// The last `up` or `start` left every node running and its blueprints applied.
        Ready = "ready",
        /// The last `up` failed part-way (a node or a blueprint step).
        Degraded = "degraded",
        /// Every node is stopped.
        Stopped = "stopped",
        /// `destroy` is deleting it.
        Destroying = "destroying",
    }
}

named! {
    /// How much a [`Event::Message`](crate::event::Event) matters.
    pub enum Level ("message level") {
        Info = "info",
        Warn = "warn",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_names_round_trip_and_match_serde() {
        fn check<T>(all: &[T])
        where
            T: Copy + PartialEq + fmt::Debug + FromStr<Err = CoreError> + serde::Serialize,
            T: fmt::Display,
        {
            for v in all {
                let text = v.to_string();
                assert_eq!(text.parse::<T>().unwrap(), *v);
                assert_eq!(serde_json::to_string(v).unwrap(), format!("\"{text}\""));
            }
        }
        check(RunKind::ALL);
        check(RunStatus::ALL);
        check(StepStatus::ALL);
        check(ClusterStatus::ALL);
        check(Level::ALL);
    }

    /// The names earlier versions wrote as free text are exactly the ones these types know.
    #[test]
    fn the_names_earlier_versions_stored_still_read() {
        for k in ["up", "destroy", "stop", "start", "extend", "gc"] {
            assert_eq!(k.parse::<RunKind>().unwrap().as_str(), k);
        }
        for s in ["running", "succeeded", "failed", "interrupted", "abandoned"] {
            assert_eq!(s.parse::<RunStatus>().unwrap().as_str(), s);
        }
        for s in ["running", "done", "failed", "skipped"] {
            assert_eq!(s.parse::<StepStatus>().unwrap().as_str(), s);
        }
        for s in ["creating", "ready", "degraded", "stopped", "destroying"] {
            assert_eq!(s.parse::<ClusterStatus>().unwrap().as_str(), s);
        }
        for l in ["info", "warn"] {
            assert_eq!(l.parse::<Level>().unwrap().as_str(), l);
        }
    }

    #[test]
    fn an_unknown_name_is_an_error_that_names_it() {
        let e = "scale".parse::<RunKind>().unwrap_err().to_string();
        assert!(e.contains("run kind") && e.contains("\"scale\""), "{e}");
        assert!(e.contains("up, destroy, stop, start, extend, gc"), "{e}");
        let e = serde_json::from_str::<RunStatus>("\"paused\"").unwrap_err();
        assert!(e.to_string().contains("paused"), "{e}");
    }
}
