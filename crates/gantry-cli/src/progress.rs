//! Rendering run events for people and machines.
//!
//! - TTY (stderr is a terminal, text output): one live line per node with its current step and
//!   elapsed time, in node order (the cluster's own steps first), plus a total bar over every
//!   step of the run: the ones `RunStarted` announces and those `StepsAdded` adds later (`up`'s
//!   blueprint steps), so it never counts past its end.
//! - Plain (not a terminal): one timestamped line per event.
//! - JSON (`--output json`): one JSON object per event on stderr; stdout keeps the result.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gantry_core::event::Event;
use gantry_engine::events::Listener;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::cli::OutputFormat;

pub fn listener(format: OutputFormat) -> (Listener, Arc<dyn Fn() + Send + Sync>) {
    match format {
        OutputFormat::Json => (Arc::new(|e: &Event| json_line(e)), Arc::new(|| {})),
        OutputFormat::Text if std::io::stderr().is_terminal() => {
            let tty = Arc::new(Mutex::new(Tty::new()));
            let t2 = tty.clone();
            (
                Arc::new(move |e: &Event| tty.lock().unwrap_or_else(|p| p.into_inner()).on(e)),
                Arc::new(move || t2.lock().unwrap_or_else(|p| p.into_inner()).finish()),
            )
        }
        OutputFormat::Text => (Arc::new(|e: &Event| plain_line(e)), Arc::new(|| {})),
    }
}

fn json_line(e: &Event) {
    let mut err = std::io::stderr().lock();
    let _ = serde_json::to_writer(&mut err, e);
    let _ = writeln!(err);
}

fn stamp() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::macros::format_description!(
            "[hour]:[minute]:[second].[subsecond digits:3]"
        ))
        .unwrap_or_default()
}

/// What a person calls a step: `create:demo-db-1` → `create`,
/// `bp/etcd/join@demo-db-1#3df5984ed8bd` → `etcd/join`.
pub fn step_label(step: &str) -> String {
    if let Some(rest) = step.strip_prefix("bp/") {
        return rest.split(['@', '#']).next().unwrap_or(rest).to_string();
    }
    step.split_once(':')
        .map(|(k, _)| k.to_string())
        .unwrap_or_else(|| step.to_string())
}

/// One line per event, or `None` for events not worth a line.
pub fn describe(e: &Event) -> Option<String> {
    let who = |node: &Option<String>| node.clone().unwrap_or_else(|| "cluster".into());
    // `create:demo-db-1` on node demo-db-1 reads as `demo-db-1 create`.
    let short = |step: &str| step_label(step);
    Some(match e {
        Event::RunStarted {
            run_id,
            kind,
            cluster,
            steps,
        } => format!("{kind} {cluster}: {steps} steps (run {run_id})"),
        // The blueprint phase says so in its own message, with what is up to date.
        Event::StepsAdded { .. } => return None,
        Event::LockWaiting {
            cluster,
            holder,
            expires_in_secs,
        } => {
            format!(
                "waiting for the lock on {cluster}, held by {holder} (lease expires in {expires_in_secs} s)"
            )
        }
        Event::StepStarted {
            step,
            node,
            attempt,
        } if *attempt > 1 => format!("{} {} attempt {attempt}", who(node), short(step)),
        Event::StepStarted { step, node, .. } => format!("{} {} started", who(node), short(step)),
        Event::StepRetrying {
            step,
            node,
            attempt,
            delay_ms,
            error,
        } => {
            format!(
                "{} {} failed (attempt {attempt}), retrying in {delay_ms} ms: {error}",
                who(node),
                short(step)
            )
        }
        Event::StepFinished {
            step,
            node,
            elapsed_ms,
        } => format!("{} {} done in {} ms", who(node), short(step), elapsed_ms),
        Event::StepSkipped { step, node, reason } => {
            format!("{} {} skipped: {reason}", who(node), short(step))
        }
        Event::StepFailed { step, node, error } => {
            format!("{} {} FAILED: {error}", who(node), short(step))
        }
        Event::Message { level, text } => format!("{level}: {text}"),
        Event::Interrupted { reason } => format!("interrupted: {reason}"),
        Event::RunFinished {
            run_id,
            status,
            elapsed_ms,
        } => {
            format!(
                "run {run_id} {status} in {:.1} s",
                *elapsed_ms as f64 / 1000.0
            )
        }
    })
}

fn plain_line(e: &Event) {
    if let Some(line) = describe(e) {
        eprintln!("{} {line}", stamp());
    }
}

/// The line of steps that belong to no node (`resources`, blueprint barriers).
const CLUSTER_LINE: &str = "cluster";

/// What a line is sorted by: the cluster's own line first, then nodes in natural order, so
/// `demo-db-2` comes before `demo-db-10` and pools stay together.
fn line_key(name: &str) -> (bool, Vec<(String, u64)>) {
    let mut parts = Vec::new();
    let (mut text, mut num, mut in_num) = (String::new(), String::new(), false);
    for c in name.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            in_num = true;
        } else {
            if in_num {
                parts.push((std::mem::take(&mut text), num.parse().unwrap_or(u64::MAX)));
                num.clear();
                in_num = false;
            }
            text.push(c);
        }
    }
    if in_num || !text.is_empty() {
        parts.push((text, num.parse().unwrap_or(0)));
    }
    (name != CLUSTER_LINE, parts)
}

/// Where a new line for `name` goes among the lines shown (kept sorted by [`line_key`]).
fn line_index(shown: &[String], name: &str) -> usize {
    let key = line_key(name);
    shown.partition_point(|s| line_key(s) < key)
}

struct Tty {
    multi: MultiProgress,
    nodes: BTreeMap<String, (ProgressBar, Instant)>,
    /// The node lines from top to bottom (what [`line_index`] sorts).
    order: Vec<String>,
    total: Option<ProgressBar>,
}

impl Tty {
    fn new() -> Tty {
        Tty::with_target(ProgressDrawTarget::stderr())
    }

    fn with_target(target: ProgressDrawTarget) -> Tty {
        Tty {
            multi: MultiProgress::with_draw_target(target),
            nodes: BTreeMap::new(),
            order: Vec::new(),
            total: None,
        }
    }

    fn node_bar(&mut self, node: &str) -> &ProgressBar {
        if !self.nodes.contains_key(node) {
            let style = ProgressStyle::with_template(
                "{spinner:.cyan} {prefix:<24} {wide_msg} {elapsed:>4}",
            )
            .expect("valid template");
            // Lines appear as nodes start steps, in whatever order that is; each goes above the
            // line of the node that follows it, so the lines read in node order.
            let at = line_index(&self.order, node);
            let bar = match (self.order.get(at), &self.total) {
                (Some(next), _) => self
                    .multi
                    .insert_before(&self.nodes[next].0, ProgressBar::new_spinner()),
                (None, Some(t)) => self.multi.insert_before(t, ProgressBar::new_spinner()),
                (None, None) => self.multi.add(ProgressBar::new_spinner()),
            };
            bar.set_style(style);
            bar.set_prefix(node.to_string());
            bar.enable_steady_tick(Duration::from_millis(120));
            self.order.insert(at, node.to_string());
            self.nodes.insert(node.to_string(), (bar, Instant::now()));
        }
        &self.nodes[node].0
    }

    /// The total bar, made with `len` steps (or grown by `len` when it exists).
    fn add_steps(&mut self, len: u64, prefix: impl FnOnce() -> String) {
        if let Some(t) = &self.total {
            t.inc_length(len);
            return;
        }
        let bar = self.multi.add(ProgressBar::new(len));
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:.bold} [{bar:30.green/white}] {pos}/{len} steps {elapsed}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix(prefix());
        self.total = Some(bar);
    }

    fn on(&mut self, e: &Event) {
        match e {
            Event::RunStarted {
                steps,
                kind,
                cluster,
                ..
            } => {
                // A new run gets its own bar.
                self.total = None;
                self.add_steps(*steps as u64, || format!("{kind} {cluster}"));
            }
            Event::StepsAdded { steps } => self.add_steps(*steps as u64, || "steps".into()),
            Event::StepStarted { step, node, .. } => {
                let name = node.clone().unwrap_or_else(|| CLUSTER_LINE.into());
                let kind = step_label(step);
                self.node_bar(&name).set_message(kind);
            }
            Event::StepRetrying {
                step,
                node,
                attempt,
                error,
                ..
            } => {
                let name = node.clone().unwrap_or_else(|| CLUSTER_LINE.into());
                let kind = step_label(step);
                self.node_bar(&name)
                    .set_message(format!("{kind} (retry {attempt}: {error})"));
            }
            Event::StepFinished { step, node, .. } => {
                let name = node.clone().unwrap_or_else(|| CLUSTER_LINE.into());
                let kind = step_label(step);
                self.node_bar(&name).set_message(format!("{kind} ✓"));
                if let Some(t) = &self.total {
                    t.inc(1);
                }
            }
            Event::StepFailed { node, .. } | Event::StepSkipped { node, .. } => {
                let name = node.clone().unwrap_or_else(|| CLUSTER_LINE.into());
                let line = describe(e).unwrap_or_default();
                let bar = self.node_bar(&name);
                bar.set_message(line.clone());
                let _ = self.multi.println(line);
                if let Some(t) = &self.total {
                    t.inc(1);
                }
            }
            other => {
                if let Some(line) = describe(other) {
                    let _ = self.multi.println(line);
                }
            }
        }
    }

    fn finish(&mut self) {
        for (bar, _) in self.nodes.values() {
            bar.finish();
        }
        if let Some(t) = &self.total {
            t.finish();
        }
        let _ = self.multi.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn started(step: &str, node: Option<&str>) -> Event {
        Event::StepStarted {
            step: step.into(),
            node: node.map(String::from),
            attempt: 1,
        }
    }

    fn finished(step: &str, node: Option<&str>) -> Event {
        Event::StepFinished {
            step: step.into(),
            node: node.map(String::from),
            elapsed_ms: 1,
        }
    }

    /// A terminal renderer that draws nowhere: its bars keep their state.
    fn tty() -> Tty {
        Tty::with_target(ProgressDrawTarget::hidden())
    }

    /// `up` of 2 nodes with a blueprint, in the order the engine emits it: the run announces
    /// its 5 machine steps, the blueprint phase adds 3 more (one failing, one skipped after it).
    /// The total bar ends exactly full, never past its end.
    #[test]
    fn the_total_bar_counts_blueprint_steps_and_never_passes_its_end() {
        let mut t = tty();
        let (n1, n2) = (Some("demo-db-1"), Some("demo-db-2"));
        let mut events = vec![Event::RunStarted {
            run_id: "r".into(),
            kind: gantry_core::status::RunKind::Up,
            cluster: "demo".into(),
            steps: 5,
        }];
        for (step, node) in [
            ("resources", None),
            ("create:demo-db-1", n1),
            ("create:demo-db-2", n2),
            ("ready:demo-db-1", n1),
            ("ready:demo-db-2", n2),
        ] {
            events.push(started(step, node));
            events.push(finished(step, node));
        }
        events.push(Event::Message {
            level: gantry_core::status::Level::Info,
            text: "blueprints: 3 step instance(s) to run, 0 up to date".into(),
        });
        events.push(Event::StepsAdded { steps: 3 });
        events.push(started("bp/etcd/start@demo-db-1#1", n1));
        events.push(finished("bp/etcd/start@demo-db-1#1", n1));
        events.push(started("bp/etcd/start@demo-db-2#2", n2));
        events.push(Event::StepFailed {
            step: "bp/etcd/start@demo-db-2#2".into(),
            node: n2.map(String::from),
            error: "exit code 1".into(),
        });
        events.push(Event::StepSkipped {
            step: "bp/etcd/done".into(),
            node: None,
            reason: "bp/etcd/start@demo-db-2#2 failed".into(),
        });
        for e in &events {
            t.on(e);
            let total = t.total.as_ref().expect("a total bar");
            assert!(
                total.position() <= total.length().unwrap_or(0),
                "{}/{:?} steps after {e:?}",
                total.position(),
                total.length()
            );
        }
        let total = t.total.as_ref().unwrap();
        assert_eq!((total.position(), total.length()), (8, Some(8)));
        t.finish();
    }

    /// Node lines appear as nodes start steps (1, 8, 9, 2, … on a busy machine), but read in
    /// node order: the cluster's own line first, then `demo-db-2` before `demo-db-10`.
    #[test]
    fn node_lines_read_in_node_order_whatever_order_they_start_in() {
        let mut t = tty();
        t.on(&Event::RunStarted {
            run_id: "r".into(),
            kind: gantry_core::status::RunKind::Up,
            cluster: "demo".into(),
            steps: 13,
        });
        for i in [1, 8, 9, 2, 12, 10, 3, 11, 4, 7, 5, 6] {
            let node = format!("demo-db-{i}");
            t.on(&started(&format!("create:{node}"), Some(&node)));
        }
        t.on(&started("resources", None));
        t.on(&started("create:demo-web-1", Some("demo-web-1")));
        let mut want = vec!["cluster".to_string()];
        want.extend((1..=12).map(|i| format!("demo-db-{i}")));
        want.push("demo-web-1".into());
        assert_eq!(t.order, want);
        t.finish();
    }

    #[test]
    fn step_labels_drop_node_and_hash() {
        assert_eq!(super::step_label("create:demo-db-1"), "create");
        assert_eq!(
            super::step_label("bp/etcd/join@demo-db-1#3df5984ed8bd"),
            "etcd/join"
        );
        assert_eq!(super::step_label("bp/etcd/done"), "etcd/done");
        assert_eq!(super::step_label("resources"), "resources");
    }
}
