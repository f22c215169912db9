//! The console on replicas sharing one PostgreSQL database: a console signed in on one
//! replica hears of, and shows, a change made through another.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod console_support;
mod pg_support;

use common::{ADMIN_TOKEN, Harness};
use console_support::{Browser, next_event};
use reqwest::{Method, StatusCode};

#[tokio::test]
async fn a_console_on_one_replica_follows_a_change_made_through_another() {
    let db = pg_support::database();
    let first = Harness::start_on(&db.url()).await;
    let second = Harness::start_on(&db.url()).await;
    first.add_host("web-01").await;

    let mut browser = Browser::new(&second);
    assert_eq!(
        browser.login(ADMIN_TOKEN).await.status,
        StatusCode::SEE_OTHER
    );
    let before = browser.get("/console/hosts/web-01").await;
    assert!(
        before.text.contains("id=\"action-pause\""),
        "{}",
        before.text
    );
    let mut stream = browser
        .request(Method::GET, "/console/events")
        .send()
        .await
        .unwrap();
    assert!(next_event(&mut stream).await.contains("event: hello"));

    let paused = first
        .admin(Method::POST, "/v1/admin/hosts/web-01/pause", None)
        .await;
    assert_eq!(paused.status, StatusCode::OK, "{}", paused.text);
    let notice = next_event(&mut stream).await;
    assert!(
        notice.contains("event: change") && notice.contains("hosts"),
        "{notice}"
    );
    let after = browser.get("/console/hosts/web-01").await;
    assert!(
        after.text.contains("id=\"action-resume\""),
        "{}",
        after.text
    );
    assert!(after.text.contains("(paused)"), "{}", after.text);
}
