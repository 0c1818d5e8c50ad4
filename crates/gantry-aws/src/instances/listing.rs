//! Concurrent `list` calls with the same filter share one `DescribeInstances`.
//!
//! The engine's create steps each list the cluster before they create their node; when 16 of
//! them start at once, 16 identical `DescribeInstances` would run (and on a slow or throttled API
//! their answers come back spread out, so their `create_node` calls miss each other's batch).
//! Instead the first caller waits until no one joined for [`LIST_WINDOW`] (at most
//! [`LIST_MAX_WAIT`]), then closes the group and makes one call for everyone who joined. The call starts after every member's `list` was called, so no member
//! gets an answer older than its own call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_ec2::types::{Filter, Instance};
use gantry_provider::ProviderError;
use tokio::sync::oneshot;

use crate::AwsProvider;

/// A group of `list` calls is closed once no one joined it for this long.
pub const LIST_WINDOW: Duration = Duration::from_millis(10);
/// The longest a group waits for more callers.
pub const LIST_MAX_WAIT: Duration = Duration::from_millis(100);

type Answer = gantry_provider::Result<Arc<Vec<Instance>>>;
type Group = Arc<Mutex<Vec<oneshot::Sender<Answer>>>>;

/// The groups being gathered, by filter.
#[derive(Default)]
pub(crate) struct Lists {
    open: Mutex<HashMap<String, Group>>,
}

impl Lists {
    fn close(&self, key: &str, g: &Group) -> Vec<oneshot::Sender<Answer>> {
        let mut open = self.open.lock().expect("lists lock");
        if open.get(key).is_some_and(|x| Arc::ptr_eq(x, g)) {
            open.remove(key);
        }
        drop(open);
        std::mem::take(&mut *g.lock().expect("lists lock"))
    }
}

/// Closes the group if its leader goes away before answering (the members then retry alone).
struct Lead<'a> {
    lists: &'a Lists,
    key: &'a str,
    group: Group,
    closed: bool,
}

impl Drop for Lead<'_> {
    fn drop(&mut self) {
        if !self.closed {
            drop(self.lists.close(self.key, &self.group));
        }
    }
}

fn copy(e: &ProviderError) -> ProviderError {
    let mut c = ProviderError::new(&e.provider, &e.op, &e.resource, e.kind, &e.message);
    c.hint = e.hint.clone();
    c
}

impl AwsProvider {
    /// `describe(filters)`, shared with concurrent callers of the same `key`.
    pub(crate) async fn describe_shared(
        &self,
        key: String,
        filters: Vec<Filter>,
    ) -> gantry_provider::Result<Arc<Vec<Instance>>> {
        let (tx, rx) = oneshot::channel();
        let lead = {
            let mut open = self.lists.open.lock().expect("lists lock");
            match open.get(&key) {
                Some(g) => {
                    g.lock().expect("lists lock").push(tx);
                    None
                }
                None => {
                    let g: Group = Arc::new(Mutex::new(vec![tx]));
                    open.insert(key.clone(), g.clone());
                    Some(g)
                }
            }
        };
        if let Some(group) = lead {
            let mut lead = Lead {
                lists: &self.lists,
                key: &key,
                group: group.clone(),
                closed: false,
            };
            let opened = std::time::Instant::now();
            let mut seen = 1;
            loop {
                tokio::time::sleep(LIST_WINDOW).await;
                let now = group.lock().expect("lists lock").len();
                if now == seen || opened.elapsed() >= LIST_MAX_WAIT {
                    break;
                }
                seen = now;
            }
            let waiters = self.lists.close(&key, &group);
            lead.closed = true;
            let r = self.describe(filters.clone()).await.map(Arc::new);
            let mut waiters = waiters.into_iter();
            let last = waiters.next_back();
            for w in waiters {
                let _ = w.send(match &r {
                    Ok(v) => Ok(v.clone()),
                    Err(e) => Err(copy(e)),
                });
            }
            if let Some(w) = last {
                let _ = w.send(r);
            }
        }
        match rx.await {
            Ok(r) => r,
            // The leader was cancelled: ask alone.
            Err(_) => self.describe(filters).await.map(Arc::new),
        }
    }
}
