//! Two `EtcdStore` handles, each with its own connection, acting as two machines: concurrent
//! event appends, racing lock acquisitions, and a lease that runs out.

use std::collections::BTreeMap;
use std::time::Duration;

use gantry_core::status::{RunKind, RunStatus};
use gantry_state::{Acquire, RunRecord, StateError, StateStore};
use gantry_state_etcd::EtcdStore;
use time::OffsetDateTime;

use crate::support::etcd;

fn run(id: &str) -> RunRecord {
    RunRecord {
        id: id.into(),
        project: "p".into(),
        cluster: "c".into(),
        kind: RunKind::Up,
        status: RunStatus::Running,
        spec_hash: None,
        holder: "1@host".into(),
        started_at: OffsetDateTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        finished_at: None,
        error: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_handles_appending_concurrently_number_events_without_gaps() {
    let Some(etcd) = etcd() else { return };
    let prefix = etcd.prefix("events-race");
    let (a, b) = (etcd.store(&prefix).await, etcd.store(&prefix).await);
    a.create_run(&run("r1")).await.unwrap();

    let mut tasks = Vec::new();
    for (who, store) in [("a", &a), ("b", &b)] {
        for i in 0..100 {
            let store: EtcdStore = store.clone();
            tasks.push(tokio::spawn(async move {
                let json = format!(r#"{{"who":"{who}","i":{i}}}"#);
                let seq = store
                    .append_event("r1", OffsetDateTime::now_utc(), &json)
                    .await
                    .expect("append_event");
                (seq, json)
            }));
        }
    }
    let mut by_seq = BTreeMap::new();
    for t in tasks {
        let (seq, json) = t.await.unwrap();
        assert!(
            by_seq.insert(seq, json).is_none(),
            "sequence number {seq} was given twice"
        );
    }
    assert_eq!(
        by_seq.keys().copied().collect::<Vec<_>>(),
        (1..=200).collect::<Vec<u64>>(),
        "200 concurrent appends must get exactly 1..=200"
    );
    // What is stored matches what each writer was told.
    let events = b.list_events("r1", 0).await.unwrap();
    assert_eq!(events.len(), 200);
    for e in events {
        assert_eq!(
            by_seq.get(&e.seq),
            Some(&e.json),
            "event {} holds another's json",
            e.seq
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_acquires_from_two_handles_have_exactly_one_winner() {
    let Some(etcd) = etcd() else { return };
    let prefix = etcd.prefix("lock-race");
    let (a, b) = (etcd.store(&prefix).await, etcd.store(&prefix).await);
    let ttl = Duration::from_secs(30);
    for round in 0..20 {
        let key = format!("cluster/c{round}");
        let (ra, rb) = tokio::join!(
            a.acquire_lock(&key, "alice", ttl),
            b.acquire_lock(&key, "bob", ttl)
        );
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        let (winner, loser) = match (&ra, &rb) {
            (Acquire::Acquired(w), Acquire::Held { holder, .. })
            | (Acquire::Held { holder, .. }, Acquire::Acquired(w)) => (w, holder),
            _ => panic!("round {round}: exactly one must win, got {ra:?} and {rb:?}"),
        };
        assert_eq!(
            loser, &winner.holder,
            "the loser must be told the winner's name"
        );
        assert_eq!(
            a.get_lock(&key).await.unwrap().as_ref(),
            Some(winner),
            "both handles must see the winner's lease"
        );
    }
}

#[tokio::test]
async fn an_expired_lease_can_be_taken_again_with_a_greater_token() {
    let Some(etcd) = etcd() else { return };
    let prefix = etcd.prefix("lease-expiry");
    let (a, b) = (etcd.store(&prefix).await, etcd.store(&prefix).await);
    let key = "cluster/x";
    let Acquire::Acquired(first) = a
        .acquire_lock(key, "alice", Duration::from_secs(1))
        .await
        .unwrap()
    else {
        panic!("a free key must be acquired")
    };
    assert!(
        matches!(
            b.acquire_lock(key, "bob", Duration::from_secs(1))
                .await
                .unwrap(),
            Acquire::Held { .. }
        ),
        "a live lease must be held"
    );

    // The etcd lease itself runs out too: the lock key is gone from etcd, not only ignored
    // (etcd may round a 1 s TTL up to its minimum of a few seconds).
    let mut raw = etcd.raw().await;
    let lock_key = format!("{prefix}locks/cluster%2Fx");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let resp = raw.get(lock_key.as_str(), None).await.unwrap();
        if resp.kvs().is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the etcd lease of a 1 s lock must expire and take its key with it"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(b.get_lock(key).await.unwrap(), None);
    assert!(matches!(
        a.renew_lock(&first, Duration::from_secs(5)).await,
        Err(StateError::LockLost { .. })
    ));

    let Acquire::Acquired(second) = b
        .acquire_lock(key, "bob", Duration::from_secs(30))
        .await
        .unwrap()
    else {
        panic!("an expired lock must be acquired again")
    };
    assert!(
        second.token > first.token,
        "the new token must be greater ({} then {})",
        first.token,
        second.token
    );
    b.release_lock(&second).await.unwrap();
}
