//! What a user sees when the store cannot be used: nobody listening, etcd going away, a wrong
//! password, a store written by a newer gantry, a record too large for etcd; and names and
//! listings that would otherwise run into each other or into gRPC's message limit.

use std::time::{Duration, Instant};

use gantry_state::{InventoryRecord, StateError, StateStore};
use gantry_state_etcd::{EtcdConfig, EtcdStore, MAX_VALUE_BYTES, SCHEMA_VERSION};
use time::OffsetDateTime;

use crate::support::{PrivateEtcd, etcd};

#[tokio::test]
async fn an_unreachable_endpoint_fails_in_bounded_time_naming_it() {
    // A port nobody listens on: bind it, then let it go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = EtcdConfig::from_url(&format!("etcd://127.0.0.1:{port}/t")).unwrap();
    config.connect_timeout = Duration::from_secs(1);
    config.request_timeout = Duration::from_secs(2);
    let started = Instant::now();
    let err = EtcdStore::open(config)
        .await
        .expect_err("nothing listens there");
    let took = started.elapsed();
    // Timeouts of 1 s + 2 s: the bound only tells "gave up" from "hangs", with room for a loaded
    // machine.
    assert!(took < Duration::from_secs(30), "took {took:?}");
    assert!(
        matches!(err, StateError::Etcd { .. }),
        "want StateError::Etcd, got {err:?}"
    );
    let shown = format!(
        "{err}: {}",
        std::error::Error::source(&err)
            .map(|s| s.to_string())
            .unwrap_or_default()
    );
    assert!(
        shown.contains(&format!("127.0.0.1:{port}")),
        "the error must name the endpoint: {shown}"
    );
    eprintln!("{shown} (after {took:?})");
}

#[tokio::test]
async fn a_store_at_a_newer_schema_version_is_refused() {
    let Some(etcd) = etcd() else { return };
    let prefix = etcd.prefix("schema");
    let store = etcd.store(&prefix).await;
    assert_eq!(store.schema_version().await.unwrap(), SCHEMA_VERSION);
    etcd.raw()
        .await
        .put(
            format!("{prefix}schema"),
            (SCHEMA_VERSION + 1).to_string(),
            None,
        )
        .await
        .unwrap();
    match EtcdStore::connect(&[etcd.endpoint()], &prefix).await {
        Err(StateError::SchemaTooNew { found, supported }) => {
            assert_eq!((found, supported), (SCHEMA_VERSION + 1, SCHEMA_VERSION));
        }
        other => panic!("want SchemaTooNew, got {other:?}"),
    }
}

#[tokio::test]
async fn a_value_over_the_limit_is_refused_before_etcd_sees_it() {
    let Some(etcd) = etcd() else { return };
    let store = etcd.store(&etcd.prefix("size")).await;
    let huge = InventoryRecord {
        project: "p".into(),
        scope: "s".into(),
        fetched_at: OffsetDateTime::now_utc(),
        payload: "x".repeat(MAX_VALUE_BYTES + 1),
    };
    match store.put_inventory(&huge).await {
        Err(StateError::InvalidArgument { reason, .. }) => {
            assert!(reason.contains("etcd"), "{reason}")
        }
        other => panic!("want InvalidArgument, got {other:?}"),
    }
}

#[tokio::test]
async fn names_with_slashes_stay_in_their_own_project() {
    let Some(etcd) = etcd() else { return };
    let store = etcd.store(&etcd.prefix("names")).await;
    let now = OffsetDateTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let cluster = |project: &str, name: &str| gantry_state::ClusterRecord {
        project: project.into(),
        name: name.into(),
        uid: "u".into(),
        provider: "local".into(),
        spec_yaml: String::new(),
        spec_json: "{}".into(),
        spec_hash: "h".into(),
        generation: 1,
        status: gantry_state::ClusterStatus::Ready,
        created_at: now,
        updated_at: now,
        expires_at: now,
    };
    store.put_cluster(&cluster("a", "x")).await.unwrap();
    store.put_cluster(&cluster("a/b", "y")).await.unwrap();
    store.put_cluster(&cluster("a", "b/y")).await.unwrap();
    let names: Vec<String> = store
        .list_clusters("a")
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["b/y", "x"]);
    assert_eq!(store.list_clusters("a/b").await.unwrap().len(), 1);
}

#[tokio::test]
async fn an_endpoint_that_never_answers_fails_in_bounded_time_naming_it() {
    // Something listens (the kernel completes the TCP handshake) but never speaks.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let mut config = EtcdConfig::new(&[format!("127.0.0.1:{port}")], "/t").unwrap();
    config.connect_timeout = Duration::from_secs(1);
    config.request_timeout = Duration::from_secs(2);
    let started = Instant::now();
    let err = EtcdStore::open(config)
        .await
        .expect_err("nothing answers there");
    let took = started.elapsed();
    // Timeouts of 1 s + 2 s: the bound only tells "gave up" from "hangs", with room for a loaded
    // machine.
    assert!(took < Duration::from_secs(30), "took {took:?}");
    let shown = format!(
        "{err}: {}",
        std::error::Error::source(&err)
            .map(|s| s.to_string())
            .unwrap_or_default()
    );
    assert!(
        shown.contains(&format!("127.0.0.1:{port}")),
        "the error must name the endpoint: {shown}"
    );
    eprintln!("{shown} (after {took:?})");
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn listings_longer_than_one_read_page_are_whole_and_ordered() {
    let Some(etcd) = etcd() else { return };
    let store = etcd.store(&etcd.prefix("pages")).await;
    let now = OffsetDateTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    store
        .put_cluster(&gantry_state::ClusterRecord {
            project: "p".into(),
            name: "big".into(),
            uid: "u".into(),
            provider: "local".into(),
            spec_yaml: String::new(),
            spec_json: "{}".into(),
            spec_hash: "h".into(),
            generation: 1,
            status: gantry_state::ClusterStatus::Ready,
            created_at: now,
            updated_at: now,
            expires_at: now,
        })
        .await
        .unwrap();
    const NODES: u32 = 1_050; // more than two pages of 500
    let mut tasks = Vec::new();
    for part in 0..10 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for index in (1..=NODES).filter(|i| i % 10 == part) {
                let node = gantry_state::NodeRecord {
                    project: "p".into(),
                    cluster: "big".into(),
                    name: format!("big-w-{index}"),
                    pool: "w".into(),
                    index,
                    provider_id: format!("i-{index}"),
                    address: None,
                    ssh_host: None,
                    ssh_port: None,
                    ssh_user: None,
                    state: "running".into(),
                    tags: Default::default(),
                    created_at: now,
                    updated_at: now,
                };
                store.put_node(&node).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let indexes: Vec<u32> = store
        .list_nodes("p", "big")
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.index)
        .collect();
    assert_eq!(indexes, (1..=NODES).collect::<Vec<_>>());
}

#[tokio::test]
async fn with_authentication_on_the_url_credentials_work_and_a_wrong_password_is_clear() {
    let Some(server) = PrivateEtcd::start() else {
        return;
    };
    let etcdctl = |args: &[&str]| {
        let out = std::process::Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &server.endpoint])
            .args(args)
            .output()
            .expect("run etcdctl");
        assert!(
            out.status.success(),
            "etcdctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    etcdctl(&["user", "add", "root:rootpw"]);
    etcdctl(&["user", "grant-role", "root", "root"]);
    etcdctl(&["auth", "enable"]);

    let good = format!("etcd://root:rootpw@{}/auth", server.endpoint);
    let store = EtcdStore::connect_url(&good).await.expect("right password");
    let id = store.world_id().await.unwrap();
    assert_eq!(store.world_id().await.unwrap(), id);

    for url in [
        format!("etcd://root:wrong-pw-123@{}/auth", server.endpoint),
        format!("etcd://{}/auth", server.endpoint),
    ] {
        let err = EtcdStore::connect_url(&url)
            .await
            .expect_err("a wrong or missing password must be refused");
        let shown = format!(
            "{err}: {}",
            std::error::Error::source(&err)
                .map(|s| s.to_string())
                .unwrap_or_default()
        );
        assert!(
            shown.contains(&server.endpoint) && !shown.contains("wrong-pw-123"),
            "the error must name the endpoint and never the password: {shown}"
        );
        assert!(
            shown.contains("user") || shown.contains("auth"),
            "the error must say it is about authentication: {shown}"
        );
    }
}

#[tokio::test]
async fn a_store_that_goes_away_fails_each_call_with_an_error_naming_it() {
    let Some(server) = PrivateEtcd::start() else {
        return;
    };
    let endpoint = server.endpoint.clone();
    let mut config = EtcdConfig::new(&[endpoint.as_str()], "/gone").unwrap();
    config.request_timeout = Duration::from_secs(3);
    let store = EtcdStore::open(config).await.unwrap();
    store.world_id().await.unwrap();
    drop(server); // stopped by PID

    let started = Instant::now();
    let err = store.get_lock("cluster/a").await.expect_err("etcd is gone");
    // Bounded by the request timeout; the bound only tells giving up from hanging.
    assert!(started.elapsed() < Duration::from_secs(30));
    match &err {
        StateError::Etcd { op, endpoints, .. } => {
            assert_eq!(*op, "read lock");
            assert!(endpoints.contains(&endpoint), "{endpoints}");
        }
        other => panic!("want StateError::Etcd, got {other:?}"),
    }
}
