//! TLS to the database with rustls, against a real PostgreSQL serving TLS on loopback (and
//! only TLS: its pg_hba.conf has `hostssl` lines alone, so a plain connection is refused).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod pg_support;

use fleetnode_control_plane::store::postgres::{PgError, PgOptions, PgStore};
use fleetnode_fixtures::certs::TestCa;
use fleetnode_fixtures::postgres::{Cluster, ClusterOptions};

#[tokio::test]
async fn the_url_chooses_tls_and_verify_full_checks_the_certificate_and_name() {
    let pki = tempfile::tempdir().unwrap();
    let ca = TestCa::new("database CA").unwrap();
    let ca_file = ca.write(pki.path()).unwrap();
    let server = ca.server().unwrap().write(pki.path(), "db").unwrap();
    let other_dir = pki.path().join("other");
    std::fs::create_dir(&other_dir).unwrap();
    let other_ca = TestCa::new("someone else's CA")
        .unwrap()
        .write(&other_dir)
        .unwrap();
    let cluster = Cluster::start(&ClusterOptions {
        loopback: true,
        tls: Some((server.cert, server.key)),
        ..ClusterOptions::default()
    })
    .unwrap();
    let db = cluster.database().unwrap();
    cluster
        .create_password_role(&db, "tls_user", "tls-Pa55")
        .unwrap();
    let password = pki.path().join("password");
    std::fs::write(&password, "tls-Pa55\n").unwrap();
    let port = cluster.port();
    let connect_to = |host: &str, query: String| {
        let options = PgOptions {
            url: format!("postgres://tls_user@{host}:{port}/{}?{query}", db.name()),
            password_file: Some(password.clone()),
            pool_size: 2,
            ..PgOptions::default()
        };
        async move { PgStore::connect(&options).await }
    };
    let connect = |query: String| connect_to("127.0.0.1", query);
    let root = |file: &std::path::Path| format!("sslrootcert={}", file.display());

    let store = connect(format!("sslmode=verify-full&{}", root(&ca_file)))
        .await
        .unwrap();
    assert!(store.load().await.unwrap().is_empty());
    // Without TLS the server has no entry for us.
    let error = connect("sslmode=disable".into()).await.unwrap_err();
    assert!(matches!(error, PgError::Authentication { .. }), "{error:?}");
    assert!(error.to_string().contains("no encryption"), "{error}");
    // A certificate from a CA we do not trust.
    let error = connect(format!("sslmode=verify-full&{}", root(&other_ca)))
        .await
        .unwrap_err();
    assert!(matches!(error, PgError::TlsHandshake { .. }), "{error:?}");
    assert!(error.to_string().contains("UnknownIssuer"), "{error}");
    // The right CA, another name: verify-full refuses, verify-ca (and require) check the chain only.
    let by_name = |mode: &str| {
        let query = format!("sslmode={mode}&{}&hostaddr=127.0.0.1", root(&ca_file));
        connect_to("db.example", query)
    };
    let error = by_name("verify-full").await.unwrap_err();
    assert!(matches!(error, PgError::TlsHandshake { .. }), "{error:?}");
    assert!(
        error
            .to_string()
            .contains(r#"not valid for name "db.example""#),
        "{error}"
    );
    by_name("verify-ca").await.unwrap();
    by_name("require").await.unwrap();
    // A root file that is not there is named.
    let error = connect(format!(
        "sslmode=verify-full&sslrootcert={}/none.pem",
        pki.path().display()
    ))
    .await
    .unwrap_err();
    assert!(matches!(error, PgError::TlsSetup { .. }), "{error:?}");
    assert!(error.to_string().contains("none.pem"), "{error}");
}
