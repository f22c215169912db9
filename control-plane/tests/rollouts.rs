//! Rollouts over the operator API of a real server (TLS, redb): waves given in order as the
//! hosts' reported events come in, manual targets refused on owned hosts, a restart that
//! resumes the rollout, a release naming an unknown host refused whole, the metrics, the
//! command line, and a wave that waits for a host's maintenance window.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{ADMIN_TOKEN, Harness, SimulatedAgent, closure};
use fleetnode_control_plane::rollout::window::TagWindows;
use fleetnode_control_plane::server::start;
use fleetnode_wire::{
    DesiredAnswer, DirectiveKind, HostId, HostState, Millis, RolloutList, RolloutPhase,
    RolloutStatus,
};
use reqwest::{Method, StatusCode};

const HOSTS: [&str; 3] = ["web-01", "web-02", "web-03"];
const BIN: &str = env!("CARGO_BIN_EXE_fleetnode-cp");

/// Three hosts, web-01 tagged canary, each with a simulated agent reporting from generation 0.
async fn fleet(harness: &Harness) -> Vec<(common::Agent, SimulatedAgent)> {
    let mut agents = Vec::new();
    for (i, host) in HOSTS.iter().enumerate() {
        let tags: &[&str] = if i == 0 { &["canary"] } else { &[] };
        let token = harness.add_host_tagged(host, tags).await;
        let agent = harness.agent(host, &token);
        let sim = SimulatedAgent::started(&closure(host, 0), 40 + i as u64);
        agent.events(sim.stream, &sim.reported).await;
        agents.push((agent, sim));
    }
    agents
}

fn start_body(waves: serde_json::Value) -> String {
    let hosts: serde_json::Map<String, serde_json::Value> = HOSTS
        .iter()
        .map(|h| ((*h).to_owned(), serde_json::json!(closure(h, 1))))
        .collect();
    serde_json::json!({ "release": { "hosts": hosts }, "waves": waves, "bake_ms": 0 }).to_string()
}

async fn status(harness: &Harness, id: u64) -> RolloutStatus {
    let answer = harness
        .admin(Method::GET, &format!("/v1/admin/rollouts/{id}"), None)
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    answer.json()
}

/// Polls the rollout until `done` holds (a safety net of 20 s, never a measurement).
async fn wait_for(
    harness: &Harness,
    id: u64,
    done: impl Fn(&RolloutStatus) -> bool,
) -> RolloutStatus {
    for _ in 0..1000 {
        let status = status(harness, id).await;
        if done(&status) {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "rollout {id} never got there: {:#?}",
        status(harness, id).await.rollout
    );
}

/// `fleetnode-cp ARGS` against the harness's server, as the admin.
fn cli_command(
    harness: &Harness,
    token_file: &std::path::Path,
    args: &[&str],
) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(BIN);
    command
        .args(args)
        .arg("--url")
        .arg(&harness.url)
        .arg("--ca-file")
        .arg(&harness.pki.ca_file)
        .arg("--admin-token-file")
        .arg(token_file);
    command
}

/// The agent reads its desired state and carries out the directive, reporting every event.
async fn carry_out(agent: &common::Agent, sim: &mut SimulatedAgent) {
    let answer: DesiredAnswer = agent.desired(None, 0).await.json();
    let directive = answer
        .desired
        .directive
        .expect("the host was given a directive");
    let DirectiveKind::Activate { target, .. } = directive.kind else {
        panic!("expected an activation");
    };
    sim.activate(directive.revision.0, &target);
    let answer = agent.events(sim.stream, &sim.reported).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
}

fn in_flight(status: &RolloutStatus) -> Vec<String> {
    status
        .rollout
        .hosts
        .iter()
        .filter(|(_, p)| matches!(p.state, HostState::InFlight { .. }))
        .map(|(h, _)| h.to_string())
        .collect()
}

#[tokio::test]
async fn waves_get_the_release_as_the_hosts_report_convergence() {
    let harness = Harness::start().await;
    let mut agents = fleet(&harness).await;
    let answer = harness
        .admin(
            Method::POST,
            "/v1/admin/rollouts",
            Some(start_body(serde_json::json!([
                {"by": "tag", "tag": "canary"},
                {"by": "percent", "percent": 100}
            ]))),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
    let started: RolloutStatus = answer.json();
    assert_eq!(started.rollout.id.0, 1);
    assert_eq!(in_flight(&started), ["web-01"]);
    assert_eq!(started.hosts.len(), 3);
    // Only the canary has a directive; it carries its own closure of the release.
    for (i, (agent, _)) in agents.iter().enumerate() {
        let answer: DesiredAnswer = agent.desired(None, 0).await.json();
        match answer.desired.directive.map(|d| d.kind) {
            Some(DirectiveKind::Activate { target, .. }) => {
                assert_eq!(i, 0);
                assert_eq!(target, closure(HOSTS[0], 1));
            }
            other => assert!(i > 0 && other.is_none(), "{other:?}"),
        }
    }

    let (agent, sim) = &mut agents[0];
    carry_out(agent, sim).await;
    let second = wait_for(&harness, 1, |s| in_flight(s).len() == 2).await;
    assert_eq!(in_flight(&second), ["web-02", "web-03"]);
    for (agent, sim) in &mut agents[1..] {
        carry_out(agent, sim).await;
    }
    let done = wait_for(&harness, 1, |s| s.rollout.is_settled()).await;
    assert!(
        matches!(done.rollout.phase, RolloutPhase::Completed(_)),
        "{:?}",
        done.rollout.phase
    );
    assert_eq!(done.rollout.counts().converged, 3);

    let list: RolloutList = harness
        .admin(Method::GET, "/v1/admin/rollouts", None)
        .await
        .json();
    assert_eq!(list.rollouts.len(), 1);
    assert_eq!(list.rollouts[0].phase, "completed");
    let metrics = harness.admin(Method::GET, "/metrics", None).await.text;
    for line in [
        "fleetnode_cp_rollout_hosts{rollout=\"1\",state=\"converged\"} 3\n",
        "fleetnode_cp_rollout_hosts{rollout=\"1\",state=\"pending\"} 0\n",
        "fleetnode_cp_rollouts{phase=\"completed\"} 1\n",
        "fleetnode_cp_rollout_halts_total 0\n",
    ] {
        assert!(metrics.contains(line), "missing {line:?} in\n{metrics}");
    }
}

#[tokio::test]
async fn a_manual_target_on_an_owned_host_is_refused_unless_forced() {
    let harness = Harness::start().await;
    fleet(&harness).await;
    let waves = serde_json::json!([{"by": "count", "count": 1}, {"by": "percent", "percent": 100}]);
    let answer = harness
        .admin(
            Method::POST,
            "/v1/admin/rollouts",
            Some(start_body(waves.clone())),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);

    // web-03 is pending in wave 2, yet owned: a manual target is refused, naming the rollout.
    let refused = harness.set_target(&["web-03"], &closure("web-03", 2)).await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.text);
    assert!(refused.text.contains("rollout 1"), "{}", refused.text);
    assert!(refused.text.contains("--force"), "{}", refused.text);
    // A second rollout of the same hosts is refused too.
    let second = harness
        .admin(Method::POST, "/v1/admin/rollouts", Some(start_body(waves)))
        .await;
    assert_eq!(second.status, StatusCode::CONFLICT, "{}", second.text);
    assert!(second.text.contains("rollout 1"), "{}", second.text);

    let body = serde_json::json!({
        "selector": {"by": "hosts", "hosts": ["web-03"]},
        "target": closure("web-03", 2),
    });
    let forced = harness
        .admin(
            Method::POST,
            "/v1/admin/targets?force=true",
            Some(body.to_string()),
        )
        .await;
    assert_eq!(forced.status, StatusCode::OK, "{}", forced.text);
    let after = status(&harness, 1).await;
    match &after.rollout.hosts[&fleetnode_wire::HostId::parse("web-03").unwrap()].state {
        HostState::TakenOut { why, .. } => assert!(why.contains("--force"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        harness.detail("web-03").await.row.target,
        Some(closure("web-03", 2))
    );
}

#[tokio::test]
async fn a_restarted_control_plane_resumes_the_rollout_where_it_was() {
    let mut harness = Harness::start().await;
    let mut agents = fleet(&harness).await;
    let waves = serde_json::json!([{"by": "count", "count": 1}, {"by": "percent", "percent": 100}]);
    let started: RolloutStatus = harness
        .admin(Method::POST, "/v1/admin/rollouts", Some(start_body(waves)))
        .await
        .json();
    let before = started.rollout.clone();

    harness.restart().await;
    let after = status(&harness, 1).await;
    assert_eq!(after.rollout, before, "the restart changed the rollout");
    let desired = harness.detail("web-01").await.desired;
    assert_eq!(
        desired.revision.0, 1,
        "the canary's directive was given again"
    );

    // The rollout goes on from there with the agents reconnecting.
    let agents_after: Vec<common::Agent> = agents
        .iter()
        .map(|(a, _)| harness.agent(&a.host, &a.token))
        .collect();
    carry_out(&agents_after[0], &mut agents[0].1).await;
    let second = wait_for(&harness, 1, |s| in_flight(s).len() == 2).await;
    assert_eq!(in_flight(&second), ["web-02", "web-03"]);
    assert_eq!(harness.detail("web-01").await.desired.revision.0, 1);
}

#[tokio::test]
async fn a_release_naming_an_unknown_host_is_refused_whole() {
    let harness = Harness::start().await;
    fleet(&harness).await;
    let body = serde_json::json!({
        "release": {"agents": {
            "web-01": closure("web-01", 1),
            "web-09": closure("web-09", 1),
        }},
    });
    let answer = harness
        .admin(Method::POST, "/v1/admin/rollouts", Some(body.to_string()))
        .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND, "{}", answer.text);
    assert!(answer.text.contains("web-09"), "{}", answer.text);
    let list: RolloutList = harness
        .admin(Method::GET, "/v1/admin/rollouts", None)
        .await
        .json();
    assert!(list.rollouts.is_empty());
    assert!(harness.detail("web-01").await.desired.directive.is_none());

    let bad = harness
        .admin(
            Method::POST,
            "/v1/admin/rollouts",
            Some(r#"{"release": {"hosts": {}}}"#.into()),
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.text);
    let missing = harness
        .admin(Method::GET, "/v1/admin/rollouts/7", None)
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_command_line_starts_follows_and_steers_a_rollout() {
    let harness = Harness::start().await;
    let mut agents = fleet(&harness).await;
    let dir = harness.pki.dir.path();
    let token_file = dir.join("admin-token");
    std::fs::write(&token_file, format!("{ADMIN_TOKEN}\n")).unwrap();
    // A Cachix Deploy deploy.json, as an existing pipeline writes it.
    let manifest = dir.join("deploy.json");
    let agents_json: serde_json::Map<String, serde_json::Value> = HOSTS
        .iter()
        .map(|h| ((*h).to_owned(), serde_json::json!(closure(h, 1))))
        .collect();
    let deploy = serde_json::json!({ "agents": agents_json, "rollbackScript": {} });
    std::fs::write(&manifest, deploy.to_string()).unwrap();
    let cli = |args: &[&str]| cli_command(&harness, &token_file, args);
    let manifest = manifest.to_str().unwrap();
    let out = cli(&[
        "rollout", "start", manifest, "--waves", "1,100%", "--bake", "0s",
    ])
    .output()
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("rollout 1: running, wave 1 of 2 rolling out"),
        "{text}"
    );
    assert!(
        text.contains("web-01") && text.contains("in-flight"),
        "{text}"
    );

    let out = cli(&["rollout", "pause", "1"]).output().await.unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("paused in wave 1"));
    let out = cli(&["rollout", "pause", "1"]).output().await.unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to pause"));
    let out = cli(&["rollout", "resume", "1"]).output().await.unwrap();
    assert!(out.status.success());

    // Followed from a pipe: one line per change until the rollout completes, then exit 0. The
    // agents move only once the watch has printed where the rollout stands, so the changes it
    // follows happen while it watches.
    let mut watch = cli(&["rollout", "status", "--watch"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = tokio::io::BufReader::new(watch.stdout.take().unwrap());
    let mut first = String::new();
    tokio::io::AsyncBufReadExt::read_line(&mut stdout, &mut first)
        .await
        .unwrap();
    assert!(first.starts_with("rollout 1"), "{first}");
    for (agent, sim) in &mut agents[..1] {
        carry_out(agent, sim).await;
    }
    wait_for(&harness, 1, |s| in_flight(s).len() == 2).await;
    for (agent, sim) in &mut agents[1..] {
        carry_out(agent, sim).await;
    }
    let mut rest = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut stdout, &mut rest)
        .await
        .unwrap();
    let out = watch.wait_with_output().await.unwrap();
    let text = first + &rest;
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("rollout 1: completed"), "{text}");
    assert!(text.contains("web-03 (wave 2): converged"), "{text}");

    let out = cli(&["rollout", "list"]).output().await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("completed") && text.contains("3/3 converged"),
        "{text}"
    );
    let out = cli(&["rollout", "status", "1", "--json"])
        .output()
        .await
        .unwrap();
    let parsed: RolloutStatus = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(parsed.rollout.counts().converged, 3);

    let unreadable = dir.join("nope.json");
    std::fs::write(&unreadable, r#"{"hosts": {"web-01": "/tmp/x"}}"#).unwrap();
    let out = cli(&["rollout", "start", unreadable.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    let error = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        error.contains("nope.json") && error.contains("/tmp/x"),
        "{error}"
    );
}

#[tokio::test]
async fn a_wave_waits_for_its_hosts_maintenance_window_and_says_so() {
    // START is a Tuesday, 22:13:20 UTC; the canary's window opens at midnight.
    const OPENS_IN: u64 = 6_400_000;
    let mut harness = Harness::start().await;
    harness.stop().await;
    let mut options = harness.options();
    options.windows =
        Arc::new(TagWindows::from_toml("[windows]\ncanary = [\"Wed 00:00-01:00 UTC\"]\n").unwrap());
    let server = start(options).await.unwrap();
    harness.url = format!("https://localhost:{}", server.local_addr().port());
    harness.server = Some(server);
    harness.wait_ready().await;
    let mut agents = fleet(&harness).await;

    let answer = harness
        .admin(
            Method::POST,
            "/v1/admin/rollouts",
            Some(start_body(serde_json::json!([
                {"by": "tag", "tag": "canary"},
                {"by": "percent", "percent": 100}
            ]))),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
    let started: RolloutStatus = answer.json();
    let opens = common::START.plus(Millis(OPENS_IN));
    assert!(
        in_flight(&started).is_empty(),
        "{:?}",
        started.rollout.hosts
    );
    let canary = &started.rollout.hosts[&HostId::parse(HOSTS[0]).unwrap()];
    assert_eq!(canary.window_opens_at, Some(opens));
    let answer: DesiredAnswer = agents[0].0.desired(None, 0).await.json();
    assert!(
        answer.desired.directive.is_none(),
        "no directive before the window"
    );

    // The command line says what the rollout waits for.
    let dir = harness.pki.dir.path();
    let token_file = dir.join("admin-token");
    std::fs::write(&token_file, format!("{ADMIN_TOKEN}\n")).unwrap();
    let out = cli_command(&harness, &token_file, &["rollout", "status", "1"])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("1 waiting for a maintenance window, the next opens 2023-11-15 00:00:00Z"),
        "{text}"
    );
    assert!(text.contains("waiting for window"), "{text}");

    // At the opening, the canary gets the release; the rollout then goes on as usual.
    harness.clock.advance(Millis(OPENS_IN));
    let opened = wait_for(&harness, 1, |s| in_flight(s) == ["web-01"]).await;
    assert_eq!(
        opened.rollout.hosts[&HostId::parse(HOSTS[0]).unwrap()].window_opens_at,
        None
    );
    let (agent, sim) = &mut agents[0];
    carry_out(agent, sim).await;
    wait_for(&harness, 1, |s| in_flight(s).len() == 2).await;
}

#[tokio::test]
async fn a_rollout_requiring_approval_waits_before_each_wave_and_the_approval_is_audited() {
    let harness = Harness::start().await;
    let mut agents = fleet(&harness).await;
    let dir = harness.pki.dir.path();
    let token_file = dir.join("admin-token");
    std::fs::write(&token_file, format!("{ADMIN_TOKEN}\n")).unwrap();
    let manifest = dir.join("release.json");
    let hosts: serde_json::Map<String, serde_json::Value> = HOSTS
        .iter()
        .map(|h| ((*h).to_owned(), serde_json::json!(closure(h, 1))))
        .collect();
    std::fs::write(&manifest, serde_json::json!({ "hosts": hosts }).to_string()).unwrap();
    let cli = |args: &[&str]| cli_command(&harness, &token_file, args);
    let out = cli(&["rollout", "approve", "1"]).output().await.unwrap();
    assert!(!out.status.success(), "no rollout yet");

    let out = cli(&[
        "rollout",
        "start",
        manifest.to_str().unwrap(),
        "--waves",
        "1,100%",
        "--bake",
        "0s",
        "--require-approval",
        "always",
    ])
    .output()
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("wave 1 of 2 waits for approval") && text.contains("rollout approve 1"),
        "{text}"
    );
    assert!(in_flight(&status(&harness, 1).await).is_empty());

    let out = cli(&["rollout", "approve", "1"]).output().await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(in_flight(&status(&harness, 1).await), ["web-01"]);
    let out = cli(&["rollout", "approve", "1"]).output().await.unwrap();
    assert!(!out.status.success());
    let refusal = String::from_utf8_lossy(&out.stderr);
    assert!(refusal.contains("waits for no approval"), "{refusal}");

    // The second wave waits in turn once the first is done.
    let (agent, sim) = &mut agents[0];
    carry_out(agent, sim).await;
    let waiting = wait_for(&harness, 1, |s| s.rollout.awaiting_approval.is_some()).await;
    assert!(in_flight(&waiting).is_empty());
    let out = cli(&["rollout", "approve", "1"]).output().await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(in_flight(&status(&harness, 1).await), ["web-02", "web-03"]);

    let log: fleetnode_wire::AuditLog = harness
        .admin(Method::GET, "/v1/admin/audit", None)
        .await
        .json();
    let approvals: Vec<(&str, &str)> = log
        .entries
        .iter()
        .filter(|e| e.action == "rollout-approve")
        .map(|e| (e.who.as_str(), e.outcome.as_str()))
        .collect();
    assert_eq!(
        approvals,
        [
            ("admin", "not_found"),
            ("admin", "ok"),
            ("admin", "conflict"),
            ("admin", "ok")
        ],
        "{log:#?}"
    );
}
