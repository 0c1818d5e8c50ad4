//! TLS through rustls: `sslmode=require` encrypts, `verify-full` checks the certificate against
//! `sslrootcert`, and a certificate from an unknown CA is refused. Which connections are
//! encrypted is asked of the server (`pg_stat_ssl`), by application name.

use gantry_state::StateError;
use gantry_state_pg::PostgresStore;

use crate::support::{self, Server, chain};

/// Whether the store's connection, found by its application name, uses TLS.
async fn uses_tls(server: &Server, app: &str) -> bool {
    let rows = server
        .admin("postgres")
        .await
        .query(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE a.application_name = $1",
            &[&app],
        )
        .await
        .unwrap();
    assert!(!rows.is_empty(), "no connection named {app}");
    rows.iter().all(|r| r.get::<_, bool>(0))
}

fn app_name() -> String {
    format!("gantry-tls-{}", uuid::Uuid::new_v4().simple())
}

#[tokio::test]
async fn sslmode_selects_plain_or_tls_and_verify_full_checks_the_certificate() {
    let Some(server) = support::server() else {
        return;
    };
    let Some(ca) = server.ca() else {
        eprintln!("skipped: the test server has no TLS (openssl missing)");
        return;
    };
    let db = support::fresh_db(server).await;

    let app = app_name();
    let _plain = PostgresStore::connect(&server.url(&db, &format!("application_name={app}")))
        .await
        .unwrap();
    assert!(
        !uses_tls(server, &app).await,
        "no sslmode must connect in plain TCP"
    );

    let app = app_name();
    let _require = PostgresStore::connect(
        &server.url(&db, &format!("sslmode=require&application_name={app}")),
    )
    .await
    .unwrap_or_else(|e| panic!("sslmode=require: {}", chain(&e)));
    assert!(uses_tls(server, &app).await, "sslmode=require must use TLS");

    for host in ["127.0.0.1", "localhost"] {
        let app = app_name();
        let url = format!(
            "postgres://gantry:{}@{host}:{}/{db}?sslmode=verify-full&sslrootcert={}&\
             application_name={app}",
            server.password,
            server.port,
            ca.display()
        );
        let _verified = PostgresStore::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("sslmode=verify-full to {host}: {}", chain(&e)));
        assert!(uses_tls(server, &app).await, "verify-full must use TLS");
    }

    // The system's roots do not know the test CA.
    let err = PostgresStore::connect(&server.url(&db, "sslmode=verify-full"))
        .await
        .unwrap_err();
    let message = chain(&err);
    assert!(
        matches!(
            err,
            StateError::Connect { .. } | StateError::InvalidArgument { .. }
        ),
        "expected a refused certificate, got {err:?}"
    );
    assert!(
        message.to_lowercase().contains("certificate"),
        "the error must say the certificate was refused: {message}"
    );
    assert!(
        !message.contains(&server.password),
        "the password leaked: {message}"
    );
}

#[tokio::test]
async fn a_missing_root_certificate_file_is_a_clear_error() {
    let Some(server) = support::server() else {
        return;
    };
    let err = PostgresStore::connect(&server.url(
        "postgres",
        "sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
    ))
    .await
    .unwrap_err();
    let message = chain(&err);
    assert!(message.contains("/nonexistent/ca.pem"), "{message}");
    assert!(
        !message.contains(&server.password),
        "the password leaked: {message}"
    );
}
