//! The operator's web console over real TLS against a real server: sign-in, cookies,
//! sign-out, a revoked operator, CSRF and origin checks, the security headers, hostile text,
//! the fleet page's filters and pages, actions in the audit log, the upload of a manifest,
//! and the live stream.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod console_support;

use std::time::Duration;

use common::{ADMIN_TOKEN, Answer, Harness, SimulatedAgent, closure};
use console_support::{Browser, add_operator, audit, location, next_event};
use fleetnode_wire::{ProbeId, ProbeMode, ProbeSummary};
use reqwest::{Method, StatusCode, header};

const HOSTILE: &str = "<script>alert(1)</script>\"><img src=x onerror=alert(1)>";

#[tokio::test]
async fn sign_in_sets_a_strict_cookie_and_sign_out_ends_the_session() {
    let harness = Harness::start().await;
    let mut browser = Browser::new(&harness);

    let away = browser.get("/console/").await;
    assert_eq!(away.status, StatusCode::SEE_OTHER);
    assert!(
        location(&away).starts_with("/console/login?next=/console/"),
        "{away:?}"
    );

    let wrong = browser.login("fno_not-a-token").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "{}", wrong.text);
    assert!(wrong.text.contains("id=\"login-error\""), "{}", wrong.text);
    assert!(browser.cookie.is_none(), "a refused sign-in sets no cookie");

    let right = browser.login(ADMIN_TOKEN).await;
    assert_eq!(right.status, StatusCode::SEE_OTHER, "{}", right.text);
    assert_eq!(location(&right), "/console/");
    let cookie = right
        .headers
        .get(header::SET_COOKIE)
        .unwrap()
        .to_str()
        .unwrap();
    for attribute in [
        "__Host-fleetnode-session=",
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
        "Path=/",
        "Max-Age=28800",
    ] {
        assert!(
            cookie.contains(attribute),
            "{attribute} missing from {cookie}"
        );
    }
    assert!(
        !cookie.contains(ADMIN_TOKEN),
        "the cookie is a session id, not the token"
    );

    let page = browser.get("/console/").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    assert!(
        page.text.contains("id=\"who\" data-test=\"who\">admin<"),
        "{}",
        page.text
    );
    let csp = page.headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap();
    for part in [
        "default-src 'self'",
        "frame-ancestors 'none'",
        "script-src 'self'",
        "style-src 'self'",
    ] {
        assert!(csp.contains(part), "{part} missing from {csp}");
    }
    assert_eq!(page.headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert_eq!(page.headers[header::REFERRER_POLICY], "no-referrer");
    assert_eq!(page.headers[header::CACHE_CONTROL], "no-store");
    assert!(
        !page.text.contains("<script>") && !page.text.contains("style="),
        "no inline script or style"
    );
    assert!(
        !page.text.contains("http://") || !page.text.contains("src=\"http"),
        "no external URL"
    );

    // The assets are served from the binary, under a versioned path.
    let at = page.text.find("/console/assets/").unwrap();
    let end = page.text[at..].find('"').unwrap();
    let script = browser
        .get(&page.text[at..at + end].replace(".css", ".js"))
        .await;
    assert_eq!(script.status, StatusCode::OK);
    assert!(script.text.contains("EventSource"));
    assert!(browser.get("/console/assets/0000/console.js").await.status == StatusCode::NOT_FOUND);

    // A session ends by itself after its lifetime.
    let mut other = Browser::new(&harness);
    other.login(ADMIN_TOKEN).await;
    assert_eq!(other.get("/console/audit").await.status, StatusCode::OK);
    harness
        .clock
        .advance(fleetnode_wire::Millis(8 * 3600 * 1000 + 1));
    assert_eq!(
        other.get("/console/audit").await.status,
        StatusCode::SEE_OTHER,
        "expired"
    );

    // Sign-out needs the form's token, then ends the session on the server.
    browser.login(ADMIN_TOKEN).await;
    let csrf = browser.csrf().await;
    let refused = browser.post("/console/logout", &[], None).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.text);
    let out = browser
        .post("/console/logout", &[("csrf", &csrf)], None)
        .await;
    assert_eq!(out.status, StatusCode::SEE_OTHER, "{}", out.text);
    assert!(
        out.headers[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let after = browser.get("/console/").await;
    assert_eq!(
        after.status,
        StatusCode::SEE_OTHER,
        "the old cookie no longer opens a page"
    );

    let log = audit(&harness).await;
    let logins: Vec<_> = log
        .entries
        .iter()
        .filter(|e| e.action == "console-login")
        .collect();
    assert_eq!(logins.len(), 4, "{logins:?}");
    assert_eq!(
        (logins[0].who.as_str(), logins[0].status),
        ("unauthenticated", 401)
    );
    assert_eq!(logins[0].outcome, "unauthorized");
    assert_eq!(
        (logins[1].who.as_str(), logins[1].outcome.as_str()),
        ("admin", "ok")
    );
    assert!(
        log.entries
            .iter()
            .any(|e| e.action == "console-logout" && e.who == "admin")
    );
}

#[tokio::test]
async fn a_revoked_operators_session_ends_at_once_and_its_stream_says_so() {
    let harness = Harness::start().await;
    let token = add_operator(&harness, "alice").await;
    let mut browser = Browser::new(&harness);
    assert_eq!(browser.login(&token).await.status, StatusCode::SEE_OTHER);
    assert_eq!(browser.get("/console/").await.status, StatusCode::OK);

    let mut stream = browser
        .request(Method::GET, "/console/events")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    assert!(next_event(&mut stream).await.contains("event: hello"));

    // A change reaches the open stream as a notice naming what changed.
    harness.add_host("web-01").await;
    let notice = next_event(&mut stream).await;
    assert!(
        notice.contains("event: change") && notice.contains("hosts"),
        "{notice}"
    );

    let revoke = harness
        .admin(Method::DELETE, "/v1/admin/operators/alice", None)
        .await;
    assert_eq!(revoke.status, StatusCode::NO_CONTENT, "{}", revoke.text);
    let mut ended = String::new();
    for _ in 0..5 {
        ended = next_event(&mut stream).await;
        if ended.contains("event: ended") {
            break;
        }
    }
    assert!(ended.contains("event: ended"), "{ended}");

    let page = browser.get("/console/").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert!(location(&page).contains("ended=revoked"), "{page:?}");
    let stream = browser.get("/console/events").await;
    assert_eq!(stream.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn forms_need_the_csrf_token_and_the_consoles_origin_and_actions_are_audited() {
    let harness = Harness::start().await;
    harness.add_host("web-01").await;
    let token = add_operator(&harness, "bob").await;
    let mut browser = Browser::new(&harness);
    browser.login(&token).await;
    let csrf = browser.csrf().await;

    let no_token = browser.post("/console/hosts/web-01/pause", &[], None).await;
    assert_eq!(no_token.status, StatusCode::FORBIDDEN, "{}", no_token.text);
    assert!(no_token.text.contains("CSRF"), "{}", no_token.text);
    let wrong_token = browser
        .post(
            "/console/hosts/web-01/pause",
            &[("csrf", &"0".repeat(64))],
            None,
        )
        .await;
    assert_eq!(wrong_token.status, StatusCode::FORBIDDEN);
    let foreign = browser
        .post(
            "/console/hosts/web-01/pause",
            &[("csrf", &csrf)],
            Some("https://evil.example"),
        )
        .await;
    assert_eq!(foreign.status, StatusCode::FORBIDDEN, "{}", foreign.text);
    assert!(foreign.text.contains("evil.example"), "{}", foreign.text);
    let cross_site = browser
        .request(Method::POST, "/console/hosts/web-01/pause")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header("sec-fetch-site", "cross-site")
        .body(format!("csrf={csrf}"))
        .send()
        .await
        .unwrap();
    assert_eq!(cross_site.status(), StatusCode::FORBIDDEN);
    let null_alone = browser
        .post(
            "/console/hosts/web-01/pause",
            &[("csrf", &csrf)],
            Some("null"),
        )
        .await;
    assert_eq!(
        null_alone.status,
        StatusCode::FORBIDDEN,
        "{}",
        null_alone.text
    );
    assert!(
        !harness.detail("web-01").await.desired.paused,
        "nothing refused took effect"
    );

    // The confirmation says what will happen; the confirmed form does it.
    let confirm = browser.get("/console/hosts/web-01/pause").await;
    assert!(
        confirm.text.contains("Pause host web-01"),
        "{}",
        confirm.text
    );
    let paused = browser
        .post("/console/hosts/web-01/pause", &[("csrf", &csrf)], None)
        .await;
    assert_eq!(paused.status, StatusCode::SEE_OTHER, "{}", paused.text);
    assert_eq!(location(&paused), "/console/hosts/web-01");
    assert!(harness.detail("web-01").await.desired.paused);

    let host_page = browser.get("/console/hosts/web-01").await;
    assert!(
        host_page.text.contains("id=\"action-resume\""),
        "{}",
        host_page.text
    );
    assert!(
        host_page.text.contains("<td class=\"by\">bob</td>"),
        "the history names who paused: {}",
        host_page.text
    );

    let log = audit(&harness).await;
    let entry = log.entries.iter().find(|e| e.action == "pause").unwrap();
    assert_eq!(entry.who, "bob");
    assert_eq!(entry.hosts.len(), 1);
    assert_eq!(entry.outcome, "ok");
    let filtered = browser.get("/console/audit?who=bob").await;
    assert!(
        filtered
            .text
            .contains("data-who=\"bob\" data-action=\"pause\""),
        "{}",
        filtered.text
    );
    assert!(
        !filtered.text.contains("data-who=\"admin\""),
        "{}",
        filtered.text
    );
}

#[tokio::test]
async fn the_fleet_page_filters_and_pages_through_the_hosts() {
    let harness = Harness::start().await;
    for i in 0..105 {
        let tag = if i % 5 == 0 { "db" } else { "web" };
        harness.add_host_tagged(&format!("h-{i:03}"), &[tag]).await;
    }
    let mut browser = Browser::new(&harness);
    browser.login(ADMIN_TOKEN).await;

    let first = browser.get("/console/").await;
    assert_eq!(first.text.matches("<tr data-host=").count(), 100);
    assert!(
        first.text.contains("<span id=\"host-total\">105</span>"),
        "{}",
        first.text
    );
    assert!(first.text.contains("id=\"fleet-generations\""));
    let at = first.text.find("id=\"page-next\" href=\"").unwrap() + 21;
    let next = &first.text[at..at + first.text[at..].find('"').unwrap()];
    assert_eq!(next, "/console/?after=h-099");
    let second = browser.get(next).await;
    assert_eq!(second.text.matches("<tr data-host=").count(), 5);
    assert!(second.text.contains("data-host=\"h-104\""));

    let db = browser.get("/console/?tag=db").await;
    assert_eq!(db.text.matches("<tr data-host=").count(), 21);
    let text = browser.get("/console/?q=h-01").await;
    assert_eq!(
        text.text.matches("<tr data-host=").count(),
        10,
        "h-010 to h-019"
    );
    let idle = browser.get("/console/?phase=idle&tag=db").await;
    assert_eq!(idle.text.matches("<tr data-host=").count(), 21);
    let failed = browser.get("/console/?phase=failed").await;
    assert!(failed.text.contains("id=\"no-hosts\""));
    let bad = browser.get("/console/?phase=nonsense").await;
    assert!(bad.text.contains("id=\"filter-problem\""), "{}", bad.text);
}

#[tokio::test]
async fn a_rollout_from_an_uploaded_manifest_and_hostile_text_from_a_host_render_as_text() {
    let harness = Harness::start().await;
    let token = harness.add_host_tagged("web-01", &["canary"]).await;
    harness.add_host("web-02").await;
    let agent = harness.agent("web-01", &token);
    let mut sim = SimulatedAgent::started(&closure("web-01", 0), 7);
    assert_eq!(agent.events(7, &sim.reported).await.status, StatusCode::OK);
    let mut heartbeat = sim.heartbeat();
    heartbeat.probes = vec![ProbeSummary {
        probe: ProbeId::parse("http-check").unwrap(),
        mode: ProbeMode::Enforce,
        passing: Some(false),
        detail: HOSTILE.to_owned(),
    }];
    assert_eq!(agent.heartbeat(&heartbeat).await.status, StatusCode::OK);

    let operator = add_operator(&harness, "carol").await;
    let mut browser = Browser::new(&harness);
    browser.login(&operator).await;
    let csrf = browser.csrf().await;

    // Cachix Deploy's shape, uploaded as a file; the preview sends nothing.
    let manifest = format!(
        r#"{{"agents": {{"web-01": "{}", "web-02": "{}"}}}}"#,
        closure("web-01", 1),
        closure("web-02", 1)
    );
    // The file's name is the operator's text, shown on the preview: escaped too.
    let name = "<script>alert(1)</script><img src=x onerror=alert(1)>.json";
    let preview = upload(&browser, &csrf, name, &manifest, "tag:canary,100%").await;
    assert_eq!(preview.status, StatusCode::OK, "{}", preview.text);
    assert!(!preview.text.contains("<script>alert") && !preview.text.contains("<img src=x"));
    assert!(
        preview
            .text
            .contains("&#60;script&#62;alert(1)&#60;/script&#62;&#60;img"),
        "{}",
        preview.text
    );
    let wave = |n: usize, host: &str| {
        let at = preview.text.find(&format!("data-wave=\"{n}\"")).unwrap();
        preview.text[at..]
            .split("</li>\n")
            .next()
            .unwrap()
            .contains(host)
    };
    assert!(wave(1, "web-01") && wave(2, "web-02"), "{}", preview.text);
    let rollouts: serde_json::Value = harness
        .admin(Method::GET, "/v1/admin/rollouts", None)
        .await
        .json();
    assert_eq!(
        rollouts["rollouts"].as_array().unwrap().len(),
        0,
        "a preview starts nothing"
    );

    let request = previewed_request(&preview.text);
    let started = browser
        .post(
            "/console/start/confirm",
            &[("csrf", &csrf), ("request", &request)],
            None,
        )
        .await;
    assert_eq!(started.status, StatusCode::SEE_OTHER, "{}", started.text);
    assert_eq!(location(&started), "/console/rollouts/1");

    // The canary takes the release and its switch fails, printing hostile text.
    let desired = harness.detail("web-01").await.desired;
    sim.next_switch_fails = Some(HOSTILE.to_owned());
    sim.answer(desired.directive.unwrap());
    assert_eq!(agent.events(7, &sim.reported).await.status, StatusCode::OK);

    let host = browser.get("/console/hosts/web-01").await;
    assert!(
        host.text.contains("id=\"host-output-tail\""),
        "{}",
        host.text
    );
    let rollout = wait_for(&browser, "/console/rollouts/1", "id=\"rollout-halt\"").await;
    assert!(rollout.contains("id=\"rollout-progress\"") && rollout.contains("<rect"));
    for page in [&host.text, &rollout] {
        assert!(!page.contains("<script>alert"), "raw script in {page}");
        assert!(!page.contains("<img src=x"), "raw img in {page}");
    }
    // As text, twice: the probe's detail and the failed switch's output.
    let escaped =
        "&#60;script&#62;alert(1)&#60;/script&#62;&#34;&#62;&#60;img src=x onerror=alert(1)&#62;";
    assert!(host.text.matches(escaped).count() >= 2, "{}", host.text);
    let tail_at = host.text.find("id=\"host-output-tail\">").unwrap();
    assert!(host.text[tail_at..].starts_with(&format!("id=\"host-output-tail\">{escaped}")));

    let log = audit(&harness).await;
    let entry = log
        .entries
        .iter()
        .find(|e| e.action == "rollout-start")
        .unwrap();
    assert_eq!(
        (entry.who.as_str(), entry.subject.as_deref()),
        ("carol", Some("rollout 1"))
    );
    assert_eq!(entry.hosts.len(), 2);
}

async fn upload(browser: &Browser, csrf: &str, name: &str, manifest: &str, waves: &str) -> Answer {
    upload_with(browser, csrf, name, manifest, &[("waves", waves)]).await
}

async fn upload_with(
    browser: &Browser,
    csrf: &str,
    name: &str,
    manifest: &str,
    settings: &[(&str, &str)],
) -> Answer {
    let boundary = "fleetnode-test-boundary";
    let mut body = String::new();
    let fields = [("csrf", csrf), ("max_failures", "0")];
    for (field, value) in fields.iter().chain(settings) {
        body.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"\r\n\r\n{value}\r\n"
        ));
    }
    body.push_str(&format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"manifest\"; filename=\"{name}\"\r\nContent-Type: application/json\r\n\r\n{manifest}\r\n--{boundary}--\r\n"
    ));
    let request = browser
        .request(Method::POST, "/console/start")
        .header(
            header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={boundary}"),
        )
        .header(header::ORIGIN, &browser.base)
        .body(body);
    Answer::from(request.send().await.unwrap()).await
}

#[tokio::test]
async fn a_wave_waiting_for_approval_is_approved_from_the_console_and_audited() {
    let harness = Harness::start().await;
    harness.add_host_tagged("web-01", &["canary"]).await;
    harness.add_host("web-02").await;
    let operator = add_operator(&harness, "dave").await;
    let mut browser = Browser::new(&harness);
    browser.login(&operator).await;
    let csrf = browser.csrf().await;
    let manifest = format!(
        r#"{{"hosts": {{"web-01": "{}", "web-02": "{}"}}}}"#,
        closure("web-01", 1),
        closure("web-02", 1)
    );
    let settings = [("waves", "tag:canary,100%"), ("require_approval", "always")];
    let preview = upload_with(&browser, &csrf, "release.json", &manifest, &settings).await;
    assert_eq!(preview.status, StatusCode::OK, "{}", preview.text);
    assert!(
        preview.text.contains("approval before each wave: always"),
        "{}",
        preview.text
    );
    let request = previewed_request(&preview.text);
    let started = browser
        .post(
            "/console/start/confirm",
            &[("csrf", &csrf), ("request", &request)],
            None,
        )
        .await;
    assert_eq!(started.status, StatusCode::SEE_OTHER, "{}", started.text);

    // The page says what the rollout waits for and offers the approval, which asks first.
    let page = wait_for(
        &browser,
        "/console/rollouts/1",
        "id=\"rollout-action-approve\"",
    )
    .await;
    assert!(
        page.contains("waits for an operator&#39;s approval")
            || page.contains("waits for an operator's approval"),
        "{page}"
    );
    assert!(harness.detail("web-01").await.desired.directive.is_none());
    let confirm = browser.get("/console/rollouts/1/approve").await;
    assert!(
        confirm.text.contains("Approve wave 1 of 2 of rollout 1"),
        "{}",
        confirm.text
    );
    let refused = browser.post("/console/rollouts/1/approve", &[], None).await;
    assert_eq!(
        refused.status,
        StatusCode::FORBIDDEN,
        "no CSRF token: {}",
        refused.text
    );
    assert!(harness.detail("web-01").await.desired.directive.is_none());

    let approved = browser
        .post("/console/rollouts/1/approve", &[("csrf", &csrf)], None)
        .await;
    assert_eq!(approved.status, StatusCode::SEE_OTHER, "{}", approved.text);
    assert!(harness.detail("web-01").await.desired.directive.is_some());
    assert!(harness.detail("web-02").await.desired.directive.is_none());
    let log = audit(&harness).await;
    let approvals: Vec<(&str, &str)> = log
        .entries
        .iter()
        .filter(|e| e.action == "rollout-approve")
        .map(|e| (e.who.as_str(), e.outcome.as_str()))
        .collect();
    assert_eq!(approvals, [("dave", "ok")], "{log:#?}");
}

/// Reads a page until it contains `what` (the rollout driver decides on its own task).
async fn wait_for(browser: &Browser, path: &str, what: &str) -> String {
    for _ in 0..500 {
        let page = browser.get(path).await;
        if page.text.contains(what) {
            return page.text;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{path} never showed {what}");
}

/// The start request a preview page carries to its confirmation, as the browser sends it.
fn previewed_request(page: &str) -> String {
    let at = page.find("name=\"request\" value=\"").unwrap() + 22;
    html_unescape(&page[at..at + page[at..].find('"').unwrap()])
}

fn html_unescape(text: &str) -> String {
    text.replace("&#34;", "\"")
        .replace("&#60;", "<")
        .replace("&#62;", ">")
        .replace("&#38;", "&")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}
