//! Connecting: migrations raced by two processes, a database from a newer gantry, a wrong
//! password, a server that is not there — each a clear answer that never shows the password.

use std::net::TcpListener;

use gantry_state::{StateError, StateStore};
use gantry_state_pg::PostgresStore;

use crate::support::{self, chain};

#[tokio::test]
async fn two_connects_racing_on_a_fresh_database_migrate_it_once() {
    let Some(server) = support::server() else {
        return;
    };
    let db = support::fresh_db(server).await;
    let url = server.url(&db, "");
    // Four at once: each would create the tables if the advisory lock did not serialize them.
    let (a, b, c, d) = tokio::join!(
        PostgresStore::connect(&url),
        PostgresStore::connect(&url),
        PostgresStore::connect(&url),
        PostgresStore::connect(&url)
    );
    for store in [a, b, c, d] {
        let store = store.unwrap_or_else(|e| panic!("racing connect failed: {}", chain(&e)));
        assert_eq!(
            store.schema_version().await.unwrap(),
            PostgresStore::SCHEMA_VERSION
        );
    }
    let admin = server.admin(&db).await;
    let versions: Vec<i32> = admin
        .query("SELECT version FROM schema_version ORDER BY version", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let want: Vec<i32> = (1..=PostgresStore::SCHEMA_VERSION as i32).collect();
    assert_eq!(
        versions, want,
        "each migration must be recorded exactly once"
    );

    // Reconnecting to an up-to-date database changes nothing and keeps the data.
    let store = PostgresStore::connect(&url).await.unwrap();
    let world = store.world_id().await.unwrap();
    drop(store);
    let again = PostgresStore::connect(&url).await.unwrap();
    assert_eq!(again.world_id().await.unwrap(), world);
}

#[tokio::test]
async fn a_database_at_a_newer_schema_version_is_refused() {
    let Some(server) = support::server() else {
        return;
    };
    let db = support::fresh_db(server).await;
    let url = server.url(&db, "");
    drop(PostgresStore::connect(&url).await.unwrap());
    let newer = PostgresStore::SCHEMA_VERSION + 1;
    server
        .admin(&db)
        .await
        .execute(
            "INSERT INTO schema_version (version, applied_at) VALUES ($1, now())",
            &[&(newer as i32)],
        )
        .await
        .unwrap();

    let err = PostgresStore::connect(&url).await.unwrap_err();
    match &err {
        StateError::SchemaTooNew { found, supported } => {
            assert_eq!((*found, *supported), (newer, PostgresStore::SCHEMA_VERSION));
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
    assert!(
        err.to_string().contains("upgrade gantry"),
        "message must say what to do: {err}"
    );
}

#[tokio::test]
async fn a_wrong_password_names_the_server_and_not_the_password() {
    let Some(server) = support::server() else {
        return;
    };
    let wrong = "not-the-Password-42";
    let url = format!(
        "postgres://gantry:{wrong}@127.0.0.1:{}/postgres",
        server.port
    );
    let err = PostgresStore::connect(&url).await.unwrap_err();
    let message = chain(&err);
    let debug = format!("{err:?}");
    assert!(
        matches!(err, StateError::Connect { .. }),
        "expected Connect, got {debug}"
    );
    assert!(
        message.contains(&format!("127.0.0.1:{}", server.port)),
        "the error must name host:port: {message}"
    );
    assert!(
        message.contains("password authentication failed"),
        "the error must say the login was refused: {message}"
    );
    for shown in [&message, &debug] {
        assert!(!shown.contains(wrong), "the password leaked: {shown}");
        assert!(
            !shown.contains(&server.password),
            "the password leaked: {shown}"
        );
    }
}

#[tokio::test]
async fn an_unreachable_server_names_host_and_port_and_not_the_password() {
    // A port that was free a moment ago: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let secret = "hunter2-unreachable";
    let url = format!("postgres://gantry:{secret}@127.0.0.1:{port}/gantry?connect_timeout=5");
    let started = std::time::Instant::now();
    let err = PostgresStore::connect(&url).await.unwrap_err();
    let message = chain(&err);
    assert!(
        matches!(err, StateError::Connect { .. }),
        "expected Connect, got {err:?}"
    );
    assert!(
        message.contains(&format!("127.0.0.1:{port}")),
        "the error must name host:port: {message}"
    );
    assert!(!message.contains(secret), "the password leaked: {message}");
    assert!(
        !format!("{err:?}").contains(secret),
        "the password leaked: {err:?}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "a refused connection must fail fast, took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn the_store_shows_its_url_without_the_password() {
    let Some(server) = support::server() else {
        return;
    };
    let db = support::fresh_db(server).await;
    let store = PostgresStore::connect(&server.url(&db, "application_name=gantry-test"))
        .await
        .unwrap();
    assert_eq!(store.kind(), "postgres");
    let shown = format!("{store:?}");
    assert!(
        !shown.contains(&server.password),
        "the password leaked: {shown}"
    );
    assert!(
        shown.contains(&format!("gantry:***@127.0.0.1:{}/{db}", server.port)),
        "{shown}"
    );
    assert!(!store.redacted_url().contains(&server.password));
}
