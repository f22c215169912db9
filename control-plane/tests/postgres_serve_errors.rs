//! `fleetnode-cp serve` on a PostgreSQL store it cannot use: a malformed URL, an unreachable
//! database, a wrong password, a database of a newer schema. Each stops the real binary with
//! an error that names the problem and never the password, and a non-zero exit.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod pg_support;

use std::process::Output;
use std::time::Duration;

use fleetnode_control_plane::store::postgres::migrate::latest;
use fleetnode_fixtures::postgres::shared;
use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_fleetnode-cp");
const PASSWORD: &str = "Sec-ret-7731";

/// Runs `serve` on `store` until it exits (it must, by itself, within a minute).
async fn serve(store: &str, password_file: Option<&std::path::Path>) -> Output {
    let dir = TempDir::new().unwrap();
    let token = dir.path().join("admin-token");
    std::fs::write(&token, "admin-token-for-tests-0123456789abcdef\n").unwrap();
    let mut command = tokio::process::Command::new(BIN);
    command
        .args(["serve", "--insecure-http", "--listen", "127.0.0.1:0"])
        .arg("--admin-token-file")
        .arg(&token)
        .arg("--store")
        .arg(store)
        .env_remove("PGPASSFILE")
        .kill_on_drop(true);
    if let Some(file) = password_file {
        command.arg("--store-password-file").arg(file);
    }
    tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("serve exits by itself on a store it cannot use")
        .unwrap()
}

fn refused(output: &Output, says: &str) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "serve kept running: {stderr}");
    assert!(stderr.contains(says), "expected {says:?} in: {stderr}");
    assert!(!stderr.contains(PASSWORD), "the password leaked: {stderr}");
    stderr
}

#[tokio::test]
async fn a_malformed_url_is_named_without_its_password() {
    let output = serve(
        &format!("postgres://fleet:{PASSWORD}@db.example:notaport/fleet"),
        None,
    )
    .await;
    let stderr = refused(&output, "is not usable");
    assert!(stderr.contains("***"), "{stderr}");
}

#[tokio::test]
async fn an_unreachable_database_is_named() {
    // Nothing listens on port 1 of loopback.
    let output = serve("postgres://fleet@127.0.0.1:1/fleet?connect_timeout=5", None).await;
    let stderr = refused(&output, "cannot reach the database");
    assert!(stderr.contains("127.0.0.1"), "{stderr}");
}

#[tokio::test]
async fn a_wrong_password_is_named_without_either_password() {
    let db = pg_support::database();
    shared()
        .unwrap()
        .create_password_role(&db, "cp_user", "the-right-one-42")
        .unwrap();
    let dir = TempDir::new().unwrap();
    let file = dir.path().join("password");
    std::fs::write(&file, format!("{PASSWORD}\n")).unwrap();
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let output = serve(&db.url_as("cp_user"), Some(&file)).await;
    let stderr = refused(&output, "refused user cp_user");
    assert!(!stderr.contains("the-right-one-42"), "{stderr}");
}

#[tokio::test]
async fn a_database_of_a_newer_schema_is_refused() {
    let db = pg_support::database();
    drop(pg_support::store(&db).await);
    let newer = latest() + 1;
    shared()
        .unwrap()
        .psql(
            db.name(),
            &format!(
                "INSERT INTO fleetnode_schema (version, description) VALUES ({newer}, 'from the future')"
            ),
        )
        .unwrap();
    let output = serve(&db.url(), None).await;
    refused(&output, &format!("schema version {newer}"));
}
