//! Opening the PostgreSQL store against a real PostgreSQL: migrations under concurrent
//! starts, a newer schema refused, and each kind of bad configuration named in its error
//! without the password.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod pg_support;

use std::os::unix::fs::PermissionsExt;

use fleetnode_control_plane::store::postgres::migrate::{MIGRATIONS, latest};
use fleetnode_control_plane::store::postgres::{PgError, PgOptions, PgStore};
use fleetnode_fixtures::postgres::shared;
use pg_support::{database, options, store};

#[tokio::test]
async fn replicas_starting_together_migrate_once_and_all_serve() {
    let db = database();
    let opening: Vec<_> = (0..6)
        .map(|_| {
            let url = db.url();
            tokio::spawn(async move { PgStore::connect(&options(&url)).await })
        })
        .collect();
    let mut stores = Vec::new();
    for task in opening {
        stores.push(task.await.unwrap().expect("every replica opens"));
    }
    let applied: usize = stores.iter().map(PgStore::migrations_applied).sum();
    assert_eq!(
        applied,
        MIGRATIONS.len(),
        "each migration is applied exactly once"
    );
    for store in &stores {
        assert!(store.load().await.unwrap().is_empty());
    }
    let versions = shared()
        .unwrap()
        .psql(
            db.name(),
            "SELECT string_agg(version::text, ',' ORDER BY version) FROM fleetnode_schema",
        )
        .unwrap();
    let expected: Vec<String> = MIGRATIONS.iter().map(|m| m.version.to_string()).collect();
    assert_eq!(versions.trim(), expected.join(","));
    // A later start finds nothing to do.
    assert_eq!(store(&db).await.migrations_applied(), 0);
}

#[tokio::test]
async fn a_database_of_a_newer_schema_is_refused() {
    let db = database();
    drop(store(&db).await);
    let newer = latest() + 1;
    shared()
        .unwrap()
        .psql(
            db.name(),
            &format!("INSERT INTO fleetnode_schema (version, description) VALUES ({newer}, 'from the future')"),
        )
        .unwrap();
    let error = PgStore::connect(&options(&db.url())).await.unwrap_err();
    assert!(
        matches!(error, PgError::NewerSchema { found, known, .. } if found == newer && known == latest()),
        "{error:?}"
    );
    let text = error.to_string();
    assert!(text.contains(&format!("schema version {newer}")), "{text}");
    assert!(
        text.contains("newer than this fleetnode-cp knows"),
        "{text}"
    );
}

#[tokio::test]
async fn a_malformed_url_is_named_without_its_password() {
    for url in [
        "postgres://fleet:s3cret-pw@db:notaport/fleet",
        "mysql://fleet:s3cret-pw@db/fleet",
        "postgres://fleet:s3cret-pw@db/fleet?sslmode=sometimes",
        "postgres://fleet:s3cret-pw@db/fleet?no_such_option=1",
    ] {
        let error = PgStore::connect(&options(url)).await.unwrap_err();
        assert!(
            matches!(error, PgError::InvalidUrl { .. }),
            "{url}: {error:?}"
        );
        let text = error.to_string();
        assert!(text.contains("is not usable"), "{text}");
        assert!(text.contains("fleet:***@db"), "{text}");
        assert!(!text.contains("s3cret-pw"), "the password leaked: {text}");
        assert!(
            !format!("{error:?}").contains("s3cret-pw"),
            "the password leaked: {error:?}"
        );
    }
}

#[tokio::test]
async fn an_unreachable_database_is_named() {
    let missing_dir = tempfile::tempdir().unwrap();
    for url in [
        format!(
            "postgres://fleet:s3cret-pw@/fleet?host={}",
            missing_dir.path().join("none").display()
        ),
        // Nothing listens on port 1 of loopback: the connection is refused.
        "postgres://fleet:s3cret-pw@127.0.0.1:1/fleet".to_owned(),
    ] {
        let error = PgStore::connect(&options(&url)).await.unwrap_err();
        assert!(
            matches!(error, PgError::Unreachable { .. }),
            "{url}: {error:?}"
        );
        assert!(error.is_unavailable());
        let text = error.to_string();
        assert!(
            text.contains("cannot reach the database at fleet@"),
            "{text}"
        );
        assert!(!text.contains("s3cret-pw"), "the password leaked: {text}");
    }
}

#[tokio::test]
async fn a_wrong_password_is_named_and_each_password_source_works() {
    let db = database();
    let cluster = shared().unwrap();
    cluster
        .create_password_role(&db, "pw_user", "right-Pa55")
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("password");
    std::fs::write(&file, "wrong-Pa55\n").unwrap();
    let url = db.url_as("pw_user");

    let error = PgStore::connect(&PgOptions {
        password_file: Some(file.clone()),
        ..options(&url)
    })
    .await
    .unwrap_err();
    assert!(matches!(error, PgError::Authentication { .. }), "{error:?}");
    let text = error.to_string();
    assert!(text.contains("refused user pw_user"), "{text}");
    assert!(text.contains("password authentication failed"), "{text}");
    assert!(!text.contains("wrong-Pa55"), "the password leaked: {text}");

    // The password file (--store-password-file).
    std::fs::write(&file, "right-Pa55\n").unwrap();
    let store = PgStore::connect(&PgOptions {
        password_file: Some(file),
        ..options(&url)
    })
    .await
    .unwrap();
    assert!(store.load().await.unwrap().is_empty());
    // The URL.
    let in_url = url.replace("postgres:///", "postgres://pw_user:right-Pa55@/");
    PgStore::connect(&options(&in_url)).await.unwrap();
    // A libpq password file, matched by socket directory, port, database and user.
    let pgpass = dir.path().join("pgpass");
    let socket = cluster.socket_dir().display().to_string();
    std::fs::write(
        &pgpass,
        format!(
            "{socket}:{}:{}:pw_user:right-Pa55\n",
            cluster.port(),
            db.name()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o600)).unwrap();
    PgStore::connect(&PgOptions {
        pgpassfile: Some(pgpass),
        ..options(&url)
    })
    .await
    .unwrap();
    // No password at all.
    let error = PgStore::connect(&options(&url)).await.unwrap_err();
    assert!(matches!(error, PgError::Authentication { .. }), "{error:?}");
}
