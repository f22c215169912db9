//! The current control plane, the real `fleetnode-cp` over HTTPS, accepts every frozen agent
//! message and operator request of every supported version, sent with that version's header,
//! and answers every frozen route (`routes.json`: the requests without a body) as it did.
//!
//! Accepted means the control plane understood the message: a success, or a `409
//! resync_required` that is about its log of the host's events (a frozen event whose seq does
//! not continue that log), never about the message. Every other answer fails the test with its
//! body.

use fleetnode_tests::binaries;
use fleetnode_tests::control_plane::ControlPlane;
use fleetnode_wire::{HostAdded, PROTOCOL_HEADER, RolloutStatus};
use reqwest::{Client, Method};
use serde_json::{Value, json};

use crate::frozen::{Example, of};

struct Api {
    client: Client,
    url: String,
    admin: String,
}

struct Answer {
    status: u16,
    body: Value,
    text: String,
}

impl Api {
    async fn send(
        &self,
        method: Method,
        path: &str,
        token: &str,
        version: &str,
        body: &Value,
    ) -> Answer {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.url))
            .header(PROTOCOL_HEADER, version);
        if !token.is_empty() {
            request = request.bearer_auth(token);
        }
        if !body.is_null() {
            request = request.json(body);
        }
        let answer = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        let status = answer.status().as_u16();
        let text = answer.text().await.unwrap();
        Answer {
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
            text,
        }
    }

    async fn admin(&self, method: Method, path: &str, body: &Value) -> Answer {
        self.send(method, path, &self.admin, "1.0", body).await
    }
}

/// `1.0` from `protocol-1.0`.
fn version_of(example: &Example) -> &str {
    example.version.trim_start_matches("protocol-")
}

fn accepted(answer: &Answer, what: &str, failures: &mut Vec<String>) {
    let resync = answer.status == 409 && answer.body["code"] == "resync_required";
    if !(200..300).contains(&answer.status) && !resync {
        failures.push(format!("{what}: {} {}", answer.status, answer.text));
    }
}

#[test]
fn the_current_control_plane_accepts_every_frozen_agent_message_and_operator_request() {
    let work = tempfile::tempdir().unwrap();
    let binary = binaries::locate(binaries::CONTROL_PLANE).unwrap();
    let cp = ControlPlane::start_alone(binary, work.path()).unwrap();
    let api = Api {
        client: cp.https_client().unwrap(),
        url: cp.url(),
        admin: cp.admin_token().unwrap(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let failures = runtime.block_on(async {
        let mut failures = Vec::new();
        let registered = operator_requests(&api, &mut failures).await;
        agent_messages(&api, &registered.token, &mut failures).await;
        routes(&api, &registered, &mut failures).await;
        failures
    });
    assert!(
        failures.is_empty(),
        "the control plane refused frozen messages:\n{}\ncontrol plane log:\n{}",
        failures.join("\n"),
        cp.log_tail(30)
    );
}

/// Sends every frozen operator request; returns the token of the host the frozen `add-host`
/// registered and the rollout the frozen `start-rollout` started.
async fn operator_requests(api: &Api, failures: &mut Vec<String>) -> Registered {
    let requests = of("operator-request");
    let mut token = None;
    let mut rollout = None;
    // The frozen releases name web-02 and start with a wave of the `canary` tag.
    let canary = api
        .admin(
            Method::POST,
            "/v1/admin/hosts",
            &json!({"id": "web-02", "tags": ["canary"]}),
        )
        .await;
    assert_eq!(canary.status, 201, "{}", canary.text);
    for example in requests.iter().filter(|e| e.stem == "add-host") {
        let answer = api
            .admin(Method::POST, "/v1/admin/hosts", &example.json())
            .await;
        accepted(&answer, &example.name(), failures);
        if let Ok(added) = serde_json::from_value::<HostAdded>(answer.body) {
            token = Some(added.token.expose().to_owned());
        }
    }
    for example in &requests {
        let name = example.name();
        let body = example.json();
        let answer = match example.stem.as_str() {
            "add-host" => continue,
            "add-operator" => api.admin(Method::POST, "/v1/admin/operators", &body).await,
            s if s.starts_with("set-target") => {
                api.admin(Method::POST, "/v1/admin/targets?force=true", &body)
                    .await
            }
            "rollback-request" => {
                api.admin(Method::POST, "/v1/admin/hosts/web-01/rollback", &body)
                    .await
            }
            s if s.starts_with("release-manifest") => {
                api.admin(
                    Method::POST,
                    "/v1/admin/rollouts",
                    &json!({"release": body}),
                )
                .await
            }
            "start-rollout" => api.admin(Method::POST, "/v1/admin/rollouts", &body).await,
            other => panic!("{name}: no route known for {other}; add it here"),
        };
        accepted(
            &answer,
            &format!("{name} (version {})", version_of(example)),
            failures,
        );
        // A rollout owns its hosts: end it so that the next frozen request can start another.
        // The frozen start-rollout's stays running for the routes that act on a rollout.
        if let Ok(status) = serde_json::from_value::<RolloutStatus>(answer.body) {
            let id = status.rollout.id.0;
            if example.stem == "start-rollout" {
                rollout = Some(id);
                continue;
            }
            let path = format!("/v1/admin/rollouts/{id}/abort");
            let aborted = api.admin(Method::POST, &path, &Value::Null).await;
            assert_eq!(aborted.status, 200, "{path}: {}", aborted.text);
        }
    }
    Registered {
        token: token.expect("the frozen add-host registered web-01"),
        rollout: rollout.expect("the frozen start-rollout started a rollout"),
    }
}

/// What the frozen operator requests made.
struct Registered {
    /// web-01's token.
    token: String,
    /// The rollout the frozen start-rollout started, still running.
    rollout: u64,
}

/// Calls every route of every frozen version's `routes.json` (requests without a body) in
/// order, as the identity it names, and expects the status it names.
async fn routes(api: &Api, registered: &Registered, failures: &mut Vec<String>) {
    let mut versions: Vec<_> = std::fs::read_dir(crate::frozen::root())
        .unwrap()
        .map(|entry| entry.unwrap().path().join("routes.json"))
        .filter(|file| file.is_file())
        .collect();
    versions.sort();
    assert!(!versions.is_empty(), "no frozen routes.json");
    for file in versions {
        let version = file
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy();
        let version = version.trim_start_matches("protocol-").to_owned();
        let routes: Vec<Value> = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        for route in routes {
            let method: Method = route["method"].as_str().unwrap().parse().unwrap();
            let path = route["path"]
                .as_str()
                .unwrap()
                .replace("{rollout}", &registered.rollout.to_string());
            let token = match route["as"].as_str().unwrap() {
                "host" => registered.token.clone(),
                "admin" => api.admin.clone(),
                _ => String::new(),
            };
            let answer = api
                .send(method.clone(), &path, &token, &version, &Value::Null)
                .await;
            if Some(u64::from(answer.status)) != route["status"].as_u64() {
                failures.push(format!(
                    "{version} {method} {path}: {} {}, expected {}",
                    answer.status, answer.text, route["status"]
                ));
            }
        }
    }
}

/// Sends every frozen agent message as web-01, each report as the only event of a batch of a
/// stream of its own.
async fn agent_messages(api: &Api, token: &str, failures: &mut Vec<String>) {
    let base = "/v1/agent/hosts/web-01";
    for (i, example) in of("agent").iter().enumerate() {
        let name = example.name();
        let body = example.json();
        let version = version_of(example);
        let answer = match example.stem.as_str() {
            s if s.starts_with("agent-status") || s.starts_with("heartbeat") => {
                api.send(
                    Method::POST,
                    &format!("{base}/heartbeat"),
                    token,
                    version,
                    &body,
                )
                .await
            }
            "event-batch" => {
                api.send(
                    Method::POST,
                    &format!("{base}/events"),
                    token,
                    version,
                    &body,
                )
                .await
            }
            s if s.starts_with("report-") => {
                let batch = json!({"stream": 0x0c0a_0000 + i as u64, "events": [body]});
                api.send(
                    Method::POST,
                    &format!("{base}/events"),
                    token,
                    version,
                    &batch,
                )
                .await
            }
            other => panic!("{name}: no route known for {other}; add it here"),
        };
        accepted(&answer, &format!("{name} (version {version})"), failures);
    }
    // The long-poll takes no body: the frozen version header is all a 1.0 agent sends.
    let poll = api
        .send(
            Method::GET,
            &format!("{base}/desired?wait=0"),
            token,
            "1.0",
            &Value::Null,
        )
        .await;
    accepted(&poll, "GET desired with protocol 1.0", failures);
}
