//! The `fleetnode-cp` binary against a running server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

use common::{ADMIN_TOKEN, Harness, SimulatedAgent, closure};
use fleetnode_wire::{
    DesiredAnswer, DirectiveKind, FailurePolicy, HostAdded, HostDetail, HostList, Millis, Revision,
};

const BIN: &str = env!("CARGO_BIN_EXE_fleetnode-cp");

struct Cli<'a> {
    harness: &'a Harness,
    token_file: std::path::PathBuf,
}

impl<'a> Cli<'a> {
    fn new(harness: &'a Harness) -> Self {
        let token_file = harness.pki.dir.path().join("admin-token");
        std::fs::write(&token_file, format!("{ADMIN_TOKEN}\n")).unwrap();
        Self {
            harness,
            token_file,
        }
    }

    async fn run(&self, args: &[&str]) -> Output {
        self.run_with_token(args, &self.token_file).await
    }

    async fn run_with_token(&self, args: &[&str], token_file: &Path) -> Output {
        tokio::process::Command::new(BIN)
            .args(args)
            .arg("--url")
            .arg(&self.harness.url)
            .arg("--ca-file")
            .arg(&self.harness.pki.ca_file)
            .arg("--admin-token-file")
            .arg(token_file)
            .env_remove("FLEETNODE_CP_URL")
            .env_remove("FLEETNODE_ADMIN_TOKEN_FILE")
            .output()
            .await
            .unwrap()
    }

    async fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args).await;
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn an_operator_adds_hosts_sets_targets_and_rolls_back() {
    let harness = Harness::start().await;
    let cli = Cli::new(&harness);

    // add-host writes the token to a private file; the token works.
    let token_path = harness.pki.dir.path().join("web-01.token");
    let token_arg = token_path.to_str().unwrap();
    let out = cli
        .ok(&[
            "add-host",
            "web-01",
            "--tag",
            "web",
            "--token-file",
            token_arg,
        ])
        .await;
    assert!(out.contains("web-01") && out.contains(token_arg), "{out}");
    let mode = std::fs::metadata(&token_path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let token = std::fs::read_to_string(&token_path).unwrap();
    let agent = harness.agent("web-01", token.trim());
    let first: DesiredAnswer = agent.desired(None, 0).await.json();
    assert!(first.changed);

    // With --json the token is printed in the API's shape.
    let added: HostAdded =
        serde_json::from_str(&cli.ok(&["add-host", "db-01", "--json"]).await).unwrap();
    assert_eq!(added.id.as_str(), "db-01");
    assert!(added.token.expose().starts_with("fnt_"));
    let out = cli.run(&["add-host", "db-01"]).await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));

    // set-target with health overrides.
    let target = closure("web-01", 1);
    let out = cli
        .ok(&[
            "set-target",
            target.as_str(),
            "--host",
            "web-01",
            "--mode",
            "switch",
            "--soak",
            "5m",
            "--sustained-failure",
            "1m",
            "--on-failure",
            "halt",
        ])
        .await;
    assert!(out.contains("web-01") && out.contains("r1"), "{out}");
    let desired = harness.detail("web-01").await.desired;
    let Some(DirectiveKind::Activate { health, mode, .. }) = desired.directive.map(|d| d.kind)
    else {
        panic!("no activate directive");
    };
    assert_eq!(mode, Some(fleetnode_wire::ActivationMode::Switch));
    assert_eq!(health.soak_ms, Some(Millis(300_000)));
    assert_eq!(health.sustained_failure_ms, Some(Millis(60_000)));
    assert_eq!(health.on_failure, Some(FailurePolicy::Halt));

    // The agent carries it out and reports.
    let mut sim = SimulatedAgent::started(&closure("web-01", 0), 3);
    sim.activate(1, &target);
    agent.events(3, &sim.reported).await;
    agent.heartbeat(&sim.heartbeat()).await;

    let table = cli.ok(&["hosts"]).await;
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("HOST") && lines[0].contains("LAST SEEN"),
        "{table}"
    );
    let web = lines.iter().find(|l| l.starts_with("web-01")).unwrap();
    assert!(
        web.contains("converged") && web.contains("nixos-system-web-01-1"),
        "{table}"
    );
    let db = lines.iter().find(|l| l.starts_with("db-01")).unwrap();
    assert!(
        db.contains("idle") && db.contains("never") && db.contains("offline"),
        "{table}"
    );
    // Columns are aligned: STATE starts at the same offset on every line.
    let state_at = lines[0].find("STATE").unwrap();
    assert_eq!(&web[state_at..state_at + 9], "converged");

    let detail: HostDetail =
        serde_json::from_str(&cli.ok(&["host", "web-01", "--json"]).await).unwrap();
    assert_eq!(detail.row.phase, fleetnode_wire::PhaseKind::Converged);
    assert_eq!(detail.row.current, Some(target.clone()));
    assert_eq!(detail.mirror, sim.state.host);

    let text = cli.ok(&["host", "web-01"]).await;
    assert!(
        text.contains("converged on") && text.contains("recent events"),
        "{text}"
    );

    let out = cli.ok(&["rollback", "web-01"]).await;
    assert!(out.contains("r2"), "{out}");
    let desired = harness.detail("web-01").await.desired;
    assert_eq!(desired.revision, Revision(2));
    assert_eq!(
        desired.directive.unwrap().kind,
        DirectiveKind::Rollback { to: None }
    );

    let out = cli.ok(&["pause", "web-01"]).await;
    assert!(out.contains("paused"), "{out}");
    cli.ok(&["revoke-host", "db-01"]).await;
    assert!(!cli.ok(&["hosts"]).await.contains("db-01"));
}

#[tokio::test]
async fn errors_say_what_was_wrong_and_what_to_do() {
    let harness = Harness::start().await;
    let cli = Cli::new(&harness);

    let wrong = harness.pki.dir.path().join("wrong-token");
    std::fs::write(&wrong, "not-the-admin-token").unwrap();
    let out = cli.run_with_token(&["hosts"], &wrong).await;
    assert!(!out.status.success());
    let text = stderr(&out);
    assert!(text.contains("the admin token was refused"), "{text}");
    assert!(text.contains("--admin-token-file"), "{text}");

    let out = cli.run(&["host", "nope"]).await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no host nope"), "{}", stderr(&out));

    let out = cli
        .run(&["set-target", "/tmp/not-a-closure", "--all"])
        .await;
    assert!(!out.status.success());
    assert!(stderr(&out).contains("/nix/store/"), "{}", stderr(&out));

    // Nothing listens there.
    let out = tokio::process::Command::new(BIN)
        .args(["hosts", "--url", "https://127.0.0.1:1", "--ca-file"])
        .arg(&harness.pki.ca_file)
        .arg("--admin-token-file")
        .arg(&cli.token_file)
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let text = stderr(&out);
    assert!(text.contains("cannot reach the control plane"), "{text}");
    assert!(text.contains("--url"), "{text}");

    // A server whose certificate the client does not trust.
    let stranger = common::Pki::new();
    let out = tokio::process::Command::new(BIN)
        .args(["hosts", "--url", &harness.url, "--ca-file"])
        .arg(&stranger.ca_file)
        .arg("--admin-token-file")
        .arg(&cli.token_file)
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--ca-file"), "{}", stderr(&out));
}

#[tokio::test]
async fn serve_refuses_an_unreadable_store_and_plain_http_off_loopback() {
    let harness = Harness::start().await;
    let dir = harness.pki.dir.path();
    let token_file = dir.join("admin-token");
    std::fs::write(&token_file, ADMIN_TOKEN).unwrap();
    let store = dir.join("broken.redb");
    std::fs::write(&store, vec![0x42_u8; 32 * 1024]).unwrap();
    let out = tokio::process::Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(&harness.pki.server.cert)
        .arg("--tls-key")
        .arg(&harness.pki.server.key)
        .arg("--admin-token-file")
        .arg(&token_file)
        .arg("--store")
        .arg(&store)
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let text = stderr(&out);
    assert!(text.contains(store.to_str().unwrap()), "{text}");
    assert!(!text.contains("panicked"), "{text}");

    let out = tokio::process::Command::new(BIN)
        .args(["serve", "--insecure-http", "--listen", "0.0.0.0:0"])
        .arg("--admin-token-file")
        .arg(&token_file)
        .arg("--store")
        .arg(dir.join("plain.redb"))
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("loopback"), "{}", stderr(&out));
}

#[tokio::test]
async fn serve_refuses_a_maintenance_windows_file_it_cannot_use_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("admin-token");
    std::fs::write(&token_file, ADMIN_TOKEN).unwrap();
    let cases = [
        (
            "missing.toml",
            None,
            "cannot read the maintenance windows file",
        ),
        (
            "shape.toml",
            Some("windows = 3\n"),
            "not a maintenance windows file",
        ),
        (
            "tag.toml",
            Some("[windows]\n\"Web Servers\" = []\n"),
            "is not a host tag",
        ),
        (
            "zone.toml",
            Some("[windows]\nweb = [\"Sat 02:00-04:00 Europe/Atlantis\"]\n"),
            "unknown time zone `Europe/Atlantis`",
        ),
        (
            "days.toml",
            Some("[windows]\nweb = [\"Caturday 02:00-04:00 UTC\"]\n"),
            "is not a day list",
        ),
    ];
    for (name, contents, expected) in cases {
        let file = dir.path().join(name);
        if let Some(contents) = contents {
            std::fs::write(&file, contents).unwrap();
        }
        let out = tokio::process::Command::new(BIN)
            .args(["serve", "--insecure-http", "--listen", "127.0.0.1:0"])
            .arg("--admin-token-file")
            .arg(&token_file)
            .arg("--store")
            .arg(dir.path().join("cp.redb"))
            .arg("--maintenance-windows")
            .arg(&file)
            .output()
            .await
            .unwrap();
        assert!(!out.status.success(), "{name}");
        let text = stderr(&out);
        assert!(
            text.contains(expected) && text.contains(name),
            "{name}: {text}"
        );
        assert!(!text.contains("panicked"), "{text}");
    }
    assert!(!dir.path().join("cp.redb").exists(), "nothing was opened");
}

#[tokio::test]
async fn the_host_list_comes_in_pages_and_the_cli_follows_them() {
    let harness = Harness::start().await;
    for id in ["a-01", "a-02", "a-03", "a-04", "a-05"] {
        harness.add_host(id).await;
    }
    harness
        .admin(reqwest::Method::DELETE, "/v1/admin/hosts/a-03", None)
        .await;
    let page = |query: &'static str| {
        let harness = &harness;
        async move {
            let answer = harness
                .admin(
                    reqwest::Method::GET,
                    &format!("/v1/admin/hosts{query}"),
                    None,
                )
                .await;
            (answer.status, answer.text)
        }
    };
    let (_, first) = page("?limit=2").await;
    let first: HostList = serde_json::from_str(&first).unwrap();
    let ids = |list: &HostList| {
        list.hosts
            .iter()
            .map(|r| r.id.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&first), ["a-01", "a-02"]);
    assert_eq!(first.next_cursor.as_deref(), Some("a-02"));
    // The revoked host is skipped without shortening the page.
    let (_, second) = page("?limit=2&cursor=a-02").await;
    let second: HostList = serde_json::from_str(&second).unwrap();
    assert_eq!(ids(&second), ["a-04", "a-05"]);
    assert_eq!(second.next_cursor, None);
    let (status, refused) = page("?limit=0").await;
    assert_eq!(
        status,
        reqwest::StatusCode::UNPROCESSABLE_ENTITY,
        "{refused}"
    );
    assert!(refused.contains("ask for 1 to 256"), "{refused}");

    let cli = Cli::new(&harness);
    let all: HostList =
        serde_json::from_str(&cli.ok(&["hosts", "--page-size", "2", "--json"]).await).unwrap();
    assert_eq!(ids(&all), ["a-01", "a-02", "a-04", "a-05"]);
    assert_eq!(all.next_cursor, None);
    let table = cli.ok(&["hosts", "--page-size", "1"]).await;
    assert_eq!(
        table.lines().filter(|l| l.starts_with("a-0")).count(),
        4,
        "{table}"
    );
}
