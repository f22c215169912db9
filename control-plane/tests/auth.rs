//! Authentication of hosts (tokens, revocation, mutual TLS), operators, and the version header.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{ADMIN_TOKEN, Harness, Pki, client};
use fleetnode_fixtures::certs::TestCa;
use fleetnode_wire::{DesiredAnswer, PROTOCOL_HEADER, protocol_version};
use reqwest::{Method, StatusCode};

#[tokio::test]
async fn a_host_needs_its_own_valid_token() {
    let harness = Harness::start().await;
    let web = harness.add_host("web-01").await;
    let db = harness.add_host("db-01").await;

    let answer = harness.agent("web-01", &web).desired(None, 0).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let desired: DesiredAnswer = answer.json();
    assert!(desired.changed);

    let wrong = harness
        .agent("web-01", "fnt_not-a-token")
        .desired(None, 0)
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.code(), "unauthorized");

    let other = harness.agent("web-01", &db).desired(None, 0).await;
    assert_eq!(other.status, StatusCode::FORBIDDEN, "{}", other.text);
    assert!(other.text.contains("db-01"), "{}", other.text);

    let admin_as_host = harness.agent("web-01", ADMIN_TOKEN).desired(None, 0).await;
    assert_eq!(admin_as_host.status, StatusCode::UNAUTHORIZED);

    let none = harness
        .http
        .get(format!("{}/v1/agent/hosts/web-01/desired", harness.url))
        .header(PROTOCOL_HEADER, "1.0")
        .send()
        .await
        .unwrap();
    assert_eq!(none.status(), StatusCode::UNAUTHORIZED);

    // An unknown host with a valid token of another host: forbidden, not a hint that it
    // does not exist.
    let unknown = harness.agent("nope", &web).desired(None, 0).await;
    assert_eq!(unknown.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_revoked_host_is_refused_at_once_and_keeps_its_history() {
    let harness = Harness::start().await;
    let web = harness.add_host("web-01").await;
    let agent = harness.agent("web-01", &web);
    let sim = common::SimulatedAgent::started(&common::closure("web-01", 0), 5);
    assert_eq!(agent.events(5, &sim.reported).await.status, StatusCode::OK);

    // A long-poll waiting when the host is revoked is answered 401 too.
    let waiting = {
        let agent = agent.clone();
        tokio::spawn(async move { agent.desired(Some(0), 300).await })
    };
    common::wait_for_waiters(&harness, 1).await;
    let revoke = harness
        .admin(Method::DELETE, "/v1/admin/hosts/web-01", None)
        .await;
    assert_eq!(revoke.status, StatusCode::NO_CONTENT, "{}", revoke.text);
    assert_eq!(waiting.await.unwrap().status, StatusCode::UNAUTHORIZED);

    let answer = agent.desired(None, 0).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert!(answer.text.contains("revoked"), "{}", answer.text);
    assert_eq!(
        agent.events(5, &sim.reported).await.status,
        StatusCode::UNAUTHORIZED
    );

    // History is kept; the id cannot be reused; the host is no longer listed or selectable.
    assert_eq!(harness.detail("web-01").await.recent_events, sim.reported);
    let again = harness
        .admin(
            Method::POST,
            "/v1/admin/hosts",
            Some(r#"{"id":"web-01"}"#.to_owned()),
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    let list = harness.admin(Method::GET, "/v1/admin/hosts", None).await;
    assert!(!list.text.contains("web-01"), "{}", list.text);
    let all = harness
        .admin(
            Method::POST,
            "/v1/admin/targets",
            Some(
                serde_json::json!({
                    "selector": {"by": "all"},
                    "target": common::closure("web-01", 1),
                })
                .to_string(),
            ),
        )
        .await;
    assert_eq!(all.status, StatusCode::NOT_FOUND, "{}", all.text);
}

#[tokio::test]
async fn the_operator_api_needs_the_admin_token() {
    let harness = Harness::start().await;
    let token = harness.add_host("web-01").await;
    for bearer in [Some("wrong"), Some(token.as_str()), None] {
        let mut request = harness.http.get(format!("{}/v1/admin/hosts", harness.url));
        if let Some(bearer) = bearer {
            request = request.bearer_auth(bearer);
        }
        let answer = common::Answer::from(request.send().await.unwrap()).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{bearer:?}");
        assert_eq!(answer.code(), "unauthorized");
    }
    // /metrics needs it too (unless --metrics-public); /healthz does not.
    let metrics = harness
        .http
        .get(format!("{}/metrics", harness.url))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), StatusCode::UNAUTHORIZED);
    let health = harness
        .http
        .get(format!("{}/healthz", harness.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(health.headers()[PROTOCOL_HEADER], protocol_version());
}

#[tokio::test]
async fn the_agent_api_requires_a_compatible_protocol_version() {
    let harness = Harness::start().await;
    let token = harness.add_host("web-01").await;
    let url = format!("{}/v1/agent/hosts/web-01/desired?wait=0", harness.url);
    for (header, status) in [
        (None, StatusCode::UPGRADE_REQUIRED),
        (Some("2.0"), StatusCode::UPGRADE_REQUIRED),
        (Some("1.9"), StatusCode::OK),
        (Some("one"), StatusCode::BAD_REQUEST),
    ] {
        let mut request = harness.http.get(&url).bearer_auth(&token);
        if let Some(header) = header {
            request = request.header(PROTOCOL_HEADER, header);
        }
        let answer = common::Answer::from(request.send().await.unwrap()).await;
        assert_eq!(answer.status, status, "{header:?}: {}", answer.text);
        assert_eq!(answer.headers[PROTOCOL_HEADER], protocol_version());
        if status == StatusCode::UPGRADE_REQUIRED {
            assert_eq!(answer.code(), "protocol_version_unsupported");
        }
    }
    // The operator API accepts a missing header but not another major version.
    let lenient = harness
        .http
        .get(format!("{}/v1/admin/hosts", harness.url))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(lenient.status(), StatusCode::OK);
    let strict = harness
        .http
        .get(format!("{}/v1/admin/hosts", harness.url))
        .bearer_auth(ADMIN_TOKEN)
        .header(PROTOCOL_HEADER, "2.1")
        .send()
        .await
        .unwrap();
    assert_eq!(strict.status(), StatusCode::UPGRADE_REQUIRED);
}

#[tokio::test]
async fn with_a_client_ca_an_agent_needs_a_certificate_naming_its_host() {
    let agents_ca_dir = tempfile::tempdir().unwrap();
    let agents_ca = TestCa::new("fleetnode agents CA").unwrap();
    let agents_ca_file = agents_ca.write(agents_ca_dir.path()).unwrap();
    let harness = Harness::start_with(Some(agents_ca_file)).await;
    let token = harness.add_host("web-01").await;
    let dir = agents_ca_dir.path();
    let ca_file = &harness.pki.ca_file;

    let own = agents_ca
        .client("web-01")
        .unwrap()
        .write(dir, "web-01")
        .unwrap();
    let good = harness
        .agent("web-01", &token)
        .with_client(client(ca_file, Some(&own)));
    let answer = good.desired(None, 0).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);

    // No certificate: the token alone is not enough.
    let absent = harness.agent("web-01", &token).desired(None, 0).await;
    assert_eq!(absent.status, StatusCode::UNAUTHORIZED);
    assert!(
        absent.text.contains("client certificate"),
        "{}",
        absent.text
    );

    // A certificate of the right CA for another host.
    let other = agents_ca
        .client("db-01")
        .unwrap()
        .write(dir, "db-01")
        .unwrap();
    let answer = harness
        .agent("web-01", &token)
        .with_client(client(ca_file, Some(&other)))
        .desired(None, 0)
        .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.text);

    // A certificate naming the host but from another CA: the handshake fails.
    let stranger_ca = Pki::new();
    let forged = stranger_ca
        .ca
        .client("web-01")
        .unwrap()
        .write(stranger_ca.dir.path(), "web-01")
        .unwrap();
    let refused = client(ca_file, Some(&forged))
        .get(format!("{}/v1/agent/hosts/web-01/desired", harness.url))
        .bearer_auth(&token)
        .header(PROTOCOL_HEADER, "1.0")
        .send()
        .await;
    assert!(refused.is_err(), "{refused:?}");

    // A certificate naming the host is enough on its own (an agent without a token)...
    let cert_only = |path: &str| {
        good.http
            .get(format!("{}{path}", harness.url))
            .header(PROTOCOL_HEADER, "1.0")
            .send()
    };
    let answer = common::Answer::from(
        cert_only("/v1/agent/hosts/web-01/desired?wait=0")
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    // ...but only for its own host, and a token sent along must still be the host's own.
    let answer = common::Answer::from(
        cert_only("/v1/agent/hosts/db-01/desired?wait=0")
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.text);
    let wrong_token = harness
        .agent("web-01", "fnt_not-the-token")
        .with_client(client(ca_file, Some(&own)))
        .desired(None, 0)
        .await;
    assert_eq!(wrong_token.status, StatusCode::UNAUTHORIZED);

    // Operators need no client certificate.
    let list = harness.admin(Method::GET, "/v1/admin/hosts", None).await;
    assert_eq!(list.status, StatusCode::OK);
}
