//! `extend`, `up --lifetime` and gc's execution against the in-memory provider.

use std::time::Duration;

use gantry_core::tags::{self, TagFilter};
use gantry_engine::ops::{self, ExtendFrom, UpOptions};
use gantry_provider::Provider;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{spec, world};

async fn tag_expiries(w: &super::World) -> Vec<OffsetDateTime> {
    w.provider
        .list(&TagFilter::cluster("test", "demo"))
        .await
        .unwrap()
        .iter()
        .map(|n| OffsetDateTime::parse(&n.tags[tags::EXPIRES], &Rfc3339).unwrap())
        .collect()
}

async fn expiry(w: &super::World) -> OffsetDateTime {
    w.store
        .get_cluster("test", "demo")
        .await
        .unwrap()
        .unwrap()
        .expires_at
}

#[tokio::test]
async fn extend_moves_record_and_every_tag() {
    let w = world();
    let (s, t) = spec(3);
    let opts = UpOptions {
        lifetime: Some(Duration::from_secs(600)),
        ..Default::default()
    };
    ops::up(&w.ctx, &s, &t, &opts).await.unwrap();
    let first = expiry(&w).await;
    assert_eq!(first.nanosecond(), 0, "expiries are whole seconds");
    let left = (first - OffsetDateTime::now_utc()).whole_seconds();
    assert!((590..=600).contains(&left), "{left}");
    assert_eq!(tag_expiries(&w).await, vec![first; 3]);

    let r = ops::extend(
        &w.ctx,
        "demo",
        Duration::from_secs(3600),
        ExtendFrom::Expiry,
    )
    .await
    .unwrap();
    assert_eq!(r.previous, Some(first));
    assert_eq!(r.expires_at, first + Duration::from_secs(3600));
    assert_eq!(expiry(&w).await, r.expires_at);
    assert_eq!(tag_expiries(&w).await, vec![r.expires_at; 3]);

    let r = ops::extend(&w.ctx, "demo", Duration::from_secs(60), ExtendFrom::Now)
        .await
        .unwrap();
    let left = (r.expires_at - OffsetDateTime::now_utc()).whole_seconds();
    assert!((50..=60).contains(&left), "{left}");
    assert_eq!(tag_expiries(&w).await, vec![r.expires_at; 3]);
    let runs = w.store.list_runs("test", Some("demo"), 10).await.unwrap();
    assert_eq!(runs[0].kind.as_str(), "extend");
    assert_eq!(runs[0].status.as_str(), "succeeded");

    // up --lifetime on the existing cluster retags the nodes it keeps.
    let opts = UpOptions {
        lifetime: Some(Duration::from_secs(7200)),
        ..Default::default()
    };
    ops::up(&w.ctx, &s, &t, &opts).await.unwrap();
    let e = expiry(&w).await;
    assert!((e - OffsetDateTime::now_utc()).whole_seconds() > 7100);
    assert_eq!(tag_expiries(&w).await, vec![e; 3]);

    let err = ops::extend(&w.ctx, "nosuch", Duration::from_secs(1), ExtendFrom::Now)
        .await
        .unwrap_err();
    assert!(
        matches!(err, gantry_engine::EngineError::ClusterNotFound { .. }),
        "{err}"
    );
}

#[tokio::test]
async fn gc_destroy_rechecks_expiry_and_gc_orphans_deletes_only_orphans() {
    let w = world();
    let (s, t) = spec(2);
    ops::up(&w.ctx, &s, &t, &UpOptions::default())
        .await
        .unwrap();
    // Not expired: gc_destroy declines, nothing is deleted.
    assert!(ops::gc_destroy(&w.ctx, "demo").await.unwrap().is_none());
    assert_eq!(super::names(&w).await.len(), 2);
    // Tracked nodes are not orphans, whatever the grace.
    let names: Vec<String> = super::names(&w).await;
    let gone = ops::gc_orphans(&w.ctx, "demo", &names, Duration::ZERO)
        .await
        .unwrap();
    assert!(gone.is_empty(), "{gone:?}");
    // Without the record they are; a long grace still protects them.
    w.store.delete_cluster("test", "demo").await.unwrap();
    let gone = ops::gc_orphans(&w.ctx, "demo", &names, Duration::from_secs(1 << 40))
        .await
        .unwrap();
    assert!(gone.is_empty(), "{gone:?}");
    let gone = ops::gc_orphans(&w.ctx, "demo", &names[..1], Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(gone, names[..1]);
    assert_eq!(super::names(&w).await, names[1..]);

    // A new `up` of the name does not adopt the earlier cluster's node (it carries the lost
    // record's uid): refused, and nothing is recorded; `destroy` removes what is left.
    let err = ops::up(&w.ctx, &s, &t, &UpOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, gantry_engine::EngineError::StaleNodes { names: stale, .. } if *stale == names_left(&names)),
        "{err}"
    );
    assert!(w.store.get_cluster("test", "demo").await.unwrap().is_none());
    ops::destroy(&w.ctx, "demo").await.unwrap();
    assert!(super::names(&w).await.is_empty());

    // Expired (record in the past): destroyed.
    ops::up(&w.ctx, &s, &t, &UpOptions::default())
        .await
        .unwrap();
    let mut c = w.store.get_cluster("test", "demo").await.unwrap().unwrap();
    c.expires_at = OffsetDateTime::now_utc() - Duration::from_secs(1);
    w.store.put_cluster(&c).await.unwrap();
    let r = ops::gc_destroy(&w.ctx, "demo")
        .await
        .unwrap()
        .expect("destroyed");
    assert_eq!(r.deleted.len(), 2);
    assert!(super::names(&w).await.is_empty());
    assert!(w.store.get_cluster("test", "demo").await.unwrap().is_none());
}

fn names_left(names: &[String]) -> String {
    names[1..].join(", ")
}
