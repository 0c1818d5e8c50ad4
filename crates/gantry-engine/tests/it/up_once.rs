//! `up` observes the provider once for its plan, under the cluster lock, and asks about a
//! shrink from that plan before it records or changes anything.

use std::sync::{Arc, Mutex};

use gantry_engine::EngineError;
use gantry_engine::ops::{self, ConfirmDelete, Confirmation, UpOptions};

use super::{names, spec, world};

/// The provider's listings since call number `from`, and the calls that are not listings.
fn lists_since(calls: &[String], from: usize) -> (Vec<String>, Vec<String>) {
    calls[from..]
        .iter()
        .cloned()
        .partition(|c| c.starts_with("list"))
}

/// Issue 11: `up` listed the provider 2 + N times (the node-name check, the cluster, then once
/// per created node only to decide whether to drop a host-key pin, and the records at the end),
/// and the CLI planned once more before it. Now one listing of the project serves the checks
/// and the plan, and one more records the nodes as they ended up, whatever N.
#[tokio::test]
async fn up_lists_the_provider_once_for_its_plan_whatever_the_number_of_nodes() {
    let w = world();
    for (count, created) in [(5, 5), (12, 7), (12, 0)] {
        let from = w.provider.calls().len();
        let (s, t) = spec(count);
        let r = ops::up(&w.ctx, &s, &t, &UpOptions::default())
            .await
            .unwrap();
        assert_eq!(r.created.len(), created);
        let calls = w.provider.calls();
        let (lists, others) = lists_since(&calls, from);
        let run = &calls[from..];
        assert_eq!(
            (
                run.first().map(String::as_str),
                run.last().map(String::as_str)
            ),
            (
                Some("list project=test"),
                Some("list cluster=demo project=test")
            ),
            "one listing of the project before anything changes, one of the cluster after: \
             {run:?}"
        );
        assert_eq!(
            lists,
            ["list project=test", "list cluster=demo project=test"],
            "the plan's listing and the one that records the nodes, for {count} node(s) \
             ({created} created); calls: {run:?}"
        );
        assert_eq!(others.len(), created, "{others:?}");
    }
}

/// Asked from the plan `up` carries out (under the lock) with the names it deletes; a no changes
/// nothing, not even the record; a yes deletes exactly those.
#[tokio::test]
async fn a_shrink_is_asked_about_under_the_lock_and_a_no_changes_nothing() {
    let w = world();
    let (s3, t3) = spec(3);
    ops::up(&w.ctx, &s3, &t3, &UpOptions::default())
        .await
        .unwrap();
    let before = w.store.get_cluster("test", "demo").await.unwrap().unwrap();
    let asked = Arc::new(Mutex::new(Vec::<Vec<String>>::new()));
    let hook = |answer: Confirmation| {
        let asked = asked.clone();
        ConfirmDelete(Arc::new(move |names: &[String]| {
            asked.lock().unwrap().push(names.to_vec());
            answer
        }))
    };
    let (s1, t1) = spec(1);
    let opts = |answer| UpOptions {
        confirm_delete: Some(hook(answer)),
        ..Default::default()
    };
    let err = ops::up(&w.ctx, &s1, &t1, &opts(Confirmation::No))
        .await
        .unwrap_err();
    assert!(
        matches!(err, EngineError::NotConfirmed { count: 2, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("nothing changed"), "{err}");
    assert_eq!(names(&w).await.len(), 3, "nothing deleted");
    assert_eq!(
        w.store.get_cluster("test", "demo").await.unwrap().unwrap(),
        before,
        "the record is not touched by a refused shrink"
    );
    let err = ops::up(&w.ctx, &s1, &t1, &opts(Confirmation::CannotAsk))
        .await
        .unwrap_err();
    assert!(
        matches!(err, EngineError::NeedsConfirmation { count: 2, .. }),
        "{err}"
    );
    let r = ops::up(&w.ctx, &s1, &t1, &opts(Confirmation::Yes))
        .await
        .unwrap();
    let mut deleted = r.deleted.clone();
    deleted.sort();
    assert_eq!(deleted, ["demo-db-2", "demo-db-3"]);
    assert_eq!(names(&w).await, ["demo-db-1"]);
    let asked = asked.lock().unwrap().clone();
    assert_eq!(asked.len(), 3, "{asked:?}");
    assert!(
        asked.iter().all(|a| a == &["demo-db-3", "demo-db-2"]),
        "{asked:?}"
    );
    // A grow deletes nothing: nobody is asked.
    let (s2, t2) = spec(2);
    ops::up(&w.ctx, &s2, &t2, &opts(Confirmation::No))
        .await
        .unwrap();
}

/// A node created anew gets a new host key, so a pin left by an earlier node of its name is
/// dropped (once, before any step runs); the pins of nodes that stay are kept.
#[tokio::test]
async fn stale_pins_of_new_nodes_are_dropped_and_kept_nodes_keep_theirs() {
    let w = world();
    let (s1, t1) = spec(1);
    ops::up(&w.ctx, &s1, &t1, &UpOptions::default())
        .await
        .unwrap();
    let kh = w.ctx.ssh.known_hosts.clone();
    let key = |_: u8| gantry_ssh::KeyPair::generate().public_openssh();
    kh.pin("demo-db-1", &key(1)).unwrap();
    kh.pin("demo-db-2", &key(2)).unwrap();
    kh.pin("other-db-1", &key(3)).unwrap();
    let kept = kh.pinned("demo-db-1").unwrap();
    let (s2, t2) = spec(2);
    let r = ops::up(&w.ctx, &s2, &t2, &UpOptions::default())
        .await
        .unwrap();
    assert_eq!(r.created, ["demo-db-2"]);
    assert_eq!(kh.pinned("demo-db-2").unwrap(), None, "stale pin dropped");
    assert_eq!(
        kh.pinned("demo-db-1").unwrap(),
        kept,
        "kept node's pin kept"
    );
    assert!(kh.pinned("other-db-1").unwrap().is_some());
}
