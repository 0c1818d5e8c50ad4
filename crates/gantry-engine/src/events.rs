//! The event bus of one run: every event goes to the caller's listener (a renderer) at once and,
//! in order, to the state store so `gantry logs RUN` can replay it.

use std::sync::Arc;

use gantry_core::event::Event;
use gantry_core::status::Level;
use gantry_state::StateStore;
use tokio::sync::mpsc;

pub type Listener = Arc<dyn Fn(&Event) + Send + Sync>;

/// Failed appends in a row after which a run stops recording its events.
const GIVE_UP_AFTER: u32 = 3;
/// A failed append that took this long gives up at once.
const SLOW_FAILURE: std::time::Duration = std::time::Duration::from_secs(2);

#[derive(Clone)]
pub struct Events {
    listener: Option<Listener>,
    tx: Option<mpsc::UnboundedSender<Event>>,
}

/// Waits for recorded events to be written.
pub struct Recorder {
    task: tokio::task::JoinHandle<()>,
}

impl Recorder {
    pub async fn flush(self) {
        let _ = self.task.await;
    }
}

impl Events {
    /// Events delivered to `listener` only (nothing recorded).
    pub fn new(listener: Option<Listener>) -> Events {
        Events { listener, tx: None }
    }

    /// Events delivered to `listener` and recorded for `run_id`. Drop every clone of the returned
    /// `Events`, then `flush` the recorder, to be sure all are stored.
    pub fn recorded(
        listener: Option<Listener>,
        store: Arc<dyn StateStore>,
        run_id: String,
    ) -> (Events, Recorder) {
        let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
        let task = tokio::spawn(async move {
            // Once the store refuses the run's writes (its cluster lock was taken over: the
            // store is fenced), no later event can land: said once, not once per event. A
            // store that keeps failing (gone away, not answering: each try may take the
            // store's whole timeout) is given up on after a few failures in a row, so that
            // the end of the run does not wait for every event to time out.
            let mut given_up = false;
            let (mut failed, mut in_a_row) = (0u64, 0u32);
            while let Some(ev) = rx.recv().await {
                if given_up {
                    failed += 1;
                    continue;
                }
                let json = serde_json::to_string(&ev).expect("events serialise");
                let tried = std::time::Instant::now();
                match store
                    .append_event(&run_id, time::OffsetDateTime::now_utc(), &json)
                    .await
                {
                    Ok(_) => in_a_row = 0,
                    Err(e @ gantry_state::StateError::Fenced { .. }) => {
                        tracing::warn!("the run's events are no longer recorded: {e}");
                        given_up = true;
                    }
                    Err(e) => {
                        if failed == 0 {
                            tracing::warn!("could not record event: {e}");
                        }
                        failed += 1;
                        in_a_row += 1;
                        // A failure that took long is a store that does not answer (the call
                        // ran into its timeout): the next would wait as long.
                        if in_a_row >= GIVE_UP_AFTER || tried.elapsed() >= SLOW_FAILURE {
                            tracing::warn!(
                                "the state store is failing: the run's further events are not \
                                 recorded"
                            );
                            given_up = true;
                        }
                    }
                }
            }
            if failed > 1 {
                tracing::warn!("{failed} events of run {run_id} could not be recorded");
            }
        });
        (
            Events {
                listener,
                tx: Some(tx),
            },
            Recorder { task },
        )
    }

    pub fn emit(&self, ev: Event) {
        if let Some(l) = &self.listener {
            l(&ev);
        }
        if let Some(tx) = &self.tx {
            let _ = tx.send(ev);
        }
    }

    pub fn message(&self, level: Level, text: impl Into<String>) {
        self.emit(Event::Message {
            level,
            text: text.into(),
        });
    }
}
