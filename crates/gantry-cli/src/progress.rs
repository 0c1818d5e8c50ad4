//! Rendering run events for people and machines.
//!
//! - TTY (stderr is a terminal, text output): one live line per node with its current step and
//!   elapsed time, plus a total bar.
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

struct Tty {
    multi: MultiProgress,
    nodes: BTreeMap<String, (ProgressBar, Instant)>,
    total: Option<ProgressBar>,
}

impl Tty {
    fn new() -> Tty {
        Tty {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            nodes: BTreeMap::new(),
            total: None,
        }
    }

    fn node_bar(&mut self, node: &str) -> &ProgressBar {
        let multi = &self.multi;
        let total = &self.total;
        &self
            .nodes
            .entry(node.to_string())
            .or_insert_with(|| {
                let style = ProgressStyle::with_template(
                    "{spinner:.cyan} {prefix:<24} {wide_msg} {elapsed:>4}",
                )
                .expect("valid template");
                let bar = match total {
                    Some(t) => multi.insert_before(t, ProgressBar::new_spinner()),
                    None => multi.add(ProgressBar::new_spinner()),
                };
                bar.set_style(style);
                bar.set_prefix(node.to_string());
                bar.enable_steady_tick(Duration::from_millis(120));
                (bar, Instant::now())
            })
            .0
    }

    fn on(&mut self, e: &Event) {
        match e {
            Event::RunStarted {
                steps,
                kind,
                cluster,
                ..
            } => {
                let bar = self.multi.add(ProgressBar::new(*steps as u64));
                bar.set_style(
                    ProgressStyle::with_template(
                        "{prefix:.bold} [{bar:30.green/white}] {pos}/{len} steps {elapsed}",
                    )
                    .expect("valid template")
                    .progress_chars("=> "),
                );
                bar.set_prefix(format!("{kind} {cluster}"));
                self.total = Some(bar);
            }
            Event::StepStarted { step, node, .. } => {
                let name = node.clone().unwrap_or_else(|| "cluster".into());
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
                let name = node.clone().unwrap_or_else(|| "cluster".into());
                let kind = step_label(step);
                self.node_bar(&name)
                    .set_message(format!("{kind} (retry {attempt}: {error})"));
            }
            Event::StepFinished { step, node, .. } => {
                let name = node.clone().unwrap_or_else(|| "cluster".into());
                let kind = step_label(step);
                self.node_bar(&name).set_message(format!("{kind} ✓"));
                if let Some(t) = &self.total {
                    t.inc(1);
                }
            }
            Event::StepFailed { node, .. } | Event::StepSkipped { node, .. } => {
                let name = node.clone().unwrap_or_else(|| "cluster".into());
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
