use std::sync::Arc;

use super::{Endpoints, InUse};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::workers::control::RequestError;

fn endpoints(urls: &[&str]) -> (Endpoints, Arc<Metrics>) {
    let list = urls
        .iter()
        .map(|u| format!("{u:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let text = format!("control_plane_url = [{list}]\nhost_id = \"a\"\ntoken_file = \"/t\"\n");
    let config = Config::parse(&text).unwrap();
    let metrics = Arc::new(Metrics::new());
    (
        Endpoints::new(&config.control_plane, metrics.clone()),
        metrics,
    )
}

fn status(code: u16) -> RequestError {
    RequestError::Status {
        status: code,
        body: None,
        retry_after: None,
    }
}

fn current(e: &Endpoints) -> String {
    e.current().1.to_owned()
}

#[test]
fn starts_with_the_first_and_sticks_to_it_on_refusals() {
    let (e, metrics) = endpoints(&["https://a", "https://b"]);
    assert_eq!(current(&e), "https://a");
    for code in [400, 401, 403, 404, 409, 413, 422, 429] {
        assert!(!e.failed(e.current().0, &status(code)), "{code} moved");
    }
    assert!(!e.failed(e.current().0, &RequestError::BadAnswer("x".into())));
    assert!(!e.failed(e.current().0, &RequestError::OtherVersion("2.0".into())));
    assert_eq!(current(&e), "https://a");
    assert!(!metrics.render().contains("control_plane_moves_total 1"));
}

#[test]
fn moves_on_no_answer_and_on_5xx_wrapping_around() {
    let (e, metrics) = endpoints(&["https://a", "https://b", "https://c"]);
    assert!(e.failed(e.current().0, &RequestError::Network("refused".into())));
    assert_eq!(current(&e), "https://b");
    assert!(e.failed(e.current().0, &status(503)));
    assert_eq!(current(&e), "https://c");
    assert!(e.failed(e.current().0, &RequestError::Tls("bad cert".into())));
    assert_eq!(current(&e), "https://a");
    let text = metrics.render();
    assert!(
        text.contains("fleetnode_agent_control_plane_moves_total 3"),
        "{text}"
    );
    assert!(
        text.contains("fleetnode_agent_control_plane_current{url=\"https://a\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("fleetnode_agent_control_plane_current{url=\"https://c\"} 0"),
        "{text}"
    );
}

#[test]
fn failures_on_one_address_move_once() {
    let (e, metrics) = endpoints(&["https://a", "https://b", "https://c"]);
    // Three workers sent to `a`, and all three fail.
    let used = e.current().0;
    assert!(e.failed(used, &RequestError::Network("refused".into())));
    assert!(!e.failed(used, &status(502)));
    assert!(!e.failed(used, &RequestError::Network("reset".into())));
    assert_eq!(current(&e), "https://b");
    assert!(
        metrics
            .render()
            .contains("fleetnode_agent_control_plane_moves_total 1")
    );
    // A failure of a request sent to `b` moves on from `b`.
    assert!(e.failed(InUse(1), &status(500)));
    assert_eq!(current(&e), "https://c");
}

#[test]
fn one_address_never_moves() {
    let (e, _) = endpoints(&["https://a"]);
    assert!(!e.failed(e.current().0, &RequestError::Network("refused".into())));
    assert_eq!(current(&e), "https://a");
}

/// Two scripted control planes behind one client: a 503 from the first moves every later
/// request to the second; a 4xx from the second keeps the client there.
#[tokio::test]
async fn the_client_sends_every_request_to_the_address_in_use() {
    use fleetnode_wire::ErrorCode;

    use crate::workers::control::testserver::{Failure, TestServer};

    let first = TestServer::start().await;
    let second = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret-token\n").unwrap();
    let text = format!(
        "control_plane_url = [\"http://{}\", \"http://{}\"]\nhost_id = \"web-01\"\ntoken_file = \"{}\"\nallow_insecure_http = true\n",
        first.addr,
        second.addr,
        token.display()
    );
    let config = Config::parse(&text).unwrap();
    let metrics = Arc::new(Metrics::new());
    let client = crate::workers::control::Client::new(&config, metrics.clone()).unwrap();
    let unavailable = Failure {
        status: 503,
        code: ErrorCode::Unavailable,
        retry_after: Some(1),
    };
    first.lock().fail_desired.push_back(unavailable);

    let refused = client.desired(None, 0).await.unwrap_err();
    assert!(refused.to_string().contains("503"), "{refused}");
    client.desired(None, 0).await.unwrap();
    assert_eq!(first.lock().polls.len(), 1);
    assert_eq!(second.lock().polls.len(), 1);

    second.lock().fail_desired.push_back(Failure {
        status: 409,
        code: ErrorCode::Conflict,
        retry_after: None,
    });
    client.desired(None, 0).await.unwrap_err();
    client.desired(None, 0).await.unwrap();
    assert_eq!(first.lock().polls.len(), 1, "a 409 moved the client");
    assert_eq!(second.lock().polls.len(), 3);
    assert!(
        metrics
            .render()
            .contains("fleetnode_agent_control_plane_moves_total 1")
    );
}
