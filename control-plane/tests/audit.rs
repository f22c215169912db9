//! Named operators and the audit log, through the `fleetnode-cp` binary against a running
//! server: each operator acts with their own token, the admin token alone manages operators,
//! a revoked token stops working, and every action (refused ones too, rollouts included) is in
//! the durable log with who, what, which hosts, when and how it ended.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{ADMIN_TOKEN, Harness, closure};
use fleetnode_wire::{AuditEntry, AuditLog, Millis, OperatorList};
use reqwest::{Method, StatusCode};

const BIN: &str = env!("CARGO_BIN_EXE_fleetnode-cp");

async fn cli(harness: &Harness, token_file: &Path, args: &[&str]) -> Output {
    tokio::process::Command::new(BIN)
        .args(args)
        .arg("--url")
        .arg(&harness.url)
        .arg("--ca-file")
        .arg(&harness.pki.ca_file)
        .arg("--admin-token-file")
        .arg(token_file)
        .env_remove("FLEETNODE_CP_URL")
        .env_remove("FLEETNODE_ADMIN_TOKEN_FILE")
        .output()
        .await
        .unwrap()
}

fn shown(output: &Output) -> String {
    format!(
        "{}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

async fn ok(harness: &Harness, token_file: &Path, args: &[&str]) -> String {
    let output = cli(harness, token_file, args).await;
    assert!(output.status.success(), "{args:?}: {}", shown(&output));
    String::from_utf8(output.stdout).unwrap()
}

async fn audit(harness: &Harness, token_file: &Path, filter: &[&str]) -> Vec<AuditEntry> {
    let mut args = vec!["audit", "--json"];
    args.extend(filter);
    let log: AuditLog = serde_json::from_str(&ok(harness, token_file, &args).await).unwrap();
    log.entries
}

fn summary(entries: &[AuditEntry]) -> Vec<(String, String, String)> {
    entries
        .iter()
        .map(|e| (e.who.clone(), e.action.clone(), e.outcome.clone()))
        .collect()
}

fn triple(who: &str, action: &str, outcome: &str) -> (String, String, String) {
    (who.to_owned(), action.to_owned(), outcome.to_owned())
}

fn admin_token_file(harness: &Harness) -> PathBuf {
    let path = harness.pki.dir.path().join("admin-token");
    std::fs::write(&path, format!("{ADMIN_TOKEN}\n")).unwrap();
    path
}

#[tokio::test]
async fn every_operator_action_is_recorded_under_its_operators_name() {
    let mut harness = Harness::start().await;
    let admin = admin_token_file(&harness);
    let alice = harness.pki.dir.path().join("alice.token");
    let out = ok(
        &harness,
        &admin,
        &[
            "add-operator",
            "alice",
            "--token-file",
            alice.to_str().unwrap(),
        ],
    )
    .await;
    assert!(out.contains("alice: added"), "{out}");
    let token = std::fs::read_to_string(&alice).unwrap();
    assert!(token.starts_with("fno_"), "{token}");

    // Alice adds hosts, targets one and starts and aborts a rollout, all with her token.
    ok(&harness, &alice, &["add-host", "web-01"]).await;
    ok(&harness, &alice, &["add-host", "web-02"]).await;
    let target = closure("web-01", 1);
    ok(
        &harness,
        &alice,
        &["set-target", target.as_str(), "--host", "web-01"],
    )
    .await;
    harness.clock.advance(Millis::from_secs(3600));
    let start = serde_json::json!({
        "release": { "hosts": { "web-02": closure("web-02", 1) } },
        "waves": [{"by": "percent", "percent": 100}],
        "bake_ms": 0,
    });
    let started = harness
        .http
        .post(format!("{}/v1/admin/rollouts", harness.url))
        .bearer_auth(token.trim())
        .header(
            fleetnode_wire::PROTOCOL_HEADER,
            fleetnode_wire::protocol_version(),
        )
        .body(start.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(
        started.status(),
        StatusCode::CREATED,
        "{}",
        started.text().await.unwrap()
    );
    let aborted = harness
        .http
        .post(format!("{}/v1/admin/rollouts/1/abort", harness.url))
        .bearer_auth(token.trim())
        .header(
            fleetnode_wire::PROTOCOL_HEADER,
            fleetnode_wire::protocol_version(),
        )
        .send()
        .await
        .unwrap();
    assert!(
        aborted.status().is_success(),
        "{}",
        aborted.text().await.unwrap()
    );

    // Operators are the admin token's business: alice may not add one.
    let refused = cli(&harness, &alice, &["add-operator", "mallory"]).await;
    assert!(!refused.status.success(), "{}", shown(&refused));
    assert!(
        shown(&refused).contains("needs the admin token"),
        "{}",
        shown(&refused)
    );
    // A token nobody holds is refused and recorded as unauthenticated.
    let stranger = harness.pki.dir.path().join("stranger.token");
    std::fs::write(&stranger, "fno_0000\n").unwrap();
    assert!(
        !cli(&harness, &stranger, &["pause", "web-01"])
            .await
            .status
            .success()
    );

    // Revoked, alice's token stops working at once.
    ok(&harness, &admin, &["revoke-operator", "alice"]).await;
    let after = cli(&harness, &alice, &["pause", "web-01"]).await;
    assert!(!after.status.success(), "{}", shown(&after));
    assert!(shown(&after).contains("was refused"), "{}", shown(&after));

    let entries = audit(&harness, &admin, &[]).await;
    assert_eq!(
        summary(&entries),
        vec![
            triple("admin", "add-operator", "ok"),
            triple("alice", "add-host", "ok"),
            triple("alice", "add-host", "ok"),
            triple("alice", "set-target", "ok"),
            triple("alice", "rollout-start", "ok"),
            triple("alice", "rollout-abort", "ok"),
            triple("alice", "add-operator", "forbidden"),
            triple("unauthenticated", "pause", "unauthorized"),
            triple("admin", "revoke-operator", "ok"),
            triple("unauthenticated", "pause", "unauthorized"),
        ],
        "{entries:#?}"
    );
    let seqs: Vec<u64> = entries.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=10).collect::<Vec<u64>>());
    let set_target = &entries[3];
    assert_eq!(
        set_target.hosts,
        vec![fleetnode_wire::HostId::parse("web-01").unwrap()]
    );
    assert_eq!(set_target.status, 200);
    assert_eq!(entries[4].subject.as_deref(), Some("rollout 1"));
    assert_eq!(
        entries[4].hosts,
        vec![fleetnode_wire::HostId::parse("web-02").unwrap()]
    );
    assert_eq!(entries[5].subject.as_deref(), Some("rollout 1"));
    assert_eq!(entries[8].subject.as_deref(), Some("operator alice"));
    assert!(
        entries[4].at > entries[3].at,
        "the clock moved between them"
    );

    // Filters: by host, and since a time (the rollout came an hour after the rest).
    let web01 = audit(&harness, &admin, &["--host", "web-01"]).await;
    assert_eq!(
        summary(&web01),
        vec![
            triple("alice", "add-host", "ok"),
            triple("alice", "set-target", "ok"),
            triple("unauthenticated", "pause", "unauthorized"),
            triple("unauthenticated", "pause", "unauthorized"),
        ]
    );
    let since = entries[4].at.to_string();
    let recent = audit(&harness, &admin, &["--since", &since]).await;
    assert_eq!(recent.first().map(|e| e.seq), Some(5), "{recent:#?}");
    let text = ok(&harness, &admin, &["audit", "--host", "web-02"]).await;
    assert!(text.contains("SEQ"), "{text}");
    assert!(text.contains("rollout-start"), "{text}");
    assert!(text.contains("web-02"), "{text}");

    // Durable: a restarted server has the same log and still refuses alice.
    harness.restart().await;
    assert_eq!(audit(&harness, &admin, &[]).await, entries);
    assert!(!cli(&harness, &alice, &["hosts"]).await.status.success());
    let list: OperatorList =
        serde_json::from_str(&ok(&harness, &admin, &["operators", "--json"]).await).unwrap();
    assert_eq!(list.operators.len(), 1);
    assert!(list.operators[0].revoked_at.is_some());
    assert_eq!(list.operators[0].added_by, "admin");
    // Stored hashed: the token is nowhere in the store's file.
    harness.stop().await;
    let bytes = std::fs::read(&harness.store).unwrap();
    let needle = token.trim().as_bytes();
    assert!(
        !bytes.windows(needle.len()).any(|w| w == needle),
        "the token is in the store"
    );
}

#[tokio::test]
async fn the_admin_name_cannot_be_taken_and_names_are_not_reused() {
    let harness = Harness::start().await;
    let admin = admin_token_file(&harness);
    let out = cli(&harness, &admin, &["add-operator", "admin"]).await;
    assert!(!out.status.success(), "{}", shown(&out));
    ok(&harness, &admin, &["add-operator", "bob"]).await;
    ok(&harness, &admin, &["revoke-operator", "bob"]).await;
    let again = cli(&harness, &admin, &["add-operator", "bob"]).await;
    assert!(!again.status.success(), "{}", shown(&again));
    assert!(
        shown(&again).contains("already exists"),
        "{}",
        shown(&again)
    );
    let answer = harness
        .admin(Method::GET, "/v1/admin/audit?host=Not_A_Host", None)
        .await;
    assert_eq!(
        answer.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        answer.text
    );
}
