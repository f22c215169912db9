//! A browser's side of the console for the tests: forms, the session cookie, the CSRF token.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use fleetnode_wire::AuditLog;
use reqwest::{Method, StatusCode, header};

use crate::common::{Answer, Harness};

/// A browser's side of the console: no automatic redirects, the session cookie kept by hand.
pub struct Browser {
    pub http: reqwest::Client,
    pub base: String,
    pub cookie: Option<String>,
}

impl Browser {
    pub fn new(harness: &Harness) -> Self {
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(crate::common::tls_config(&harness.pki.ca_file, None))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Self {
            http,
            base: harness.url.clone(),
            cookie: None,
        }
    }

    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(cookie) = &self.cookie {
            request = request.header(header::COOKIE, cookie);
        }
        request
    }

    pub async fn get(&self, path: &str) -> Answer {
        Answer::from(self.request(Method::GET, path).send().await.unwrap()).await
    }

    /// A form post from `origin` (the console's own when `None`).
    pub async fn post(&self, path: &str, fields: &[(&str, &str)], origin: Option<&str>) -> Answer {
        let body: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("{k}={}", encode(v)))
            .collect();
        let request = self
            .request(Method::POST, path)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ORIGIN, origin.unwrap_or(&self.base))
            .body(body.join("&"));
        Answer::from(request.send().await.unwrap()).await
    }

    pub async fn login(&mut self, token: &str) -> Answer {
        let answer = self
            .post(
                "/console/login",
                &[("token", token), ("next", "/console/")],
                None,
            )
            .await;
        if let Some(set) = answer.headers.get(header::SET_COOKIE) {
            let pair = set.to_str().unwrap().split(';').next().unwrap().to_owned();
            self.cookie = Some(pair);
        }
        answer
    }

    /// The CSRF token in a page's forms.
    pub async fn csrf(&self) -> String {
        let page = self.get("/console/rollouts").await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text);
        let at = page.text.find("name=\"csrf\" value=\"").unwrap() + 19;
        page.text[at..at + 64].to_owned()
    }
}

pub fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                char::from(b).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

pub fn location(answer: &Answer) -> &str {
    answer
        .headers
        .get(header::LOCATION)
        .unwrap()
        .to_str()
        .unwrap()
}

pub async fn audit(harness: &Harness) -> AuditLog {
    harness
        .admin(Method::GET, "/v1/admin/audit", None)
        .await
        .json()
}

pub async fn add_operator(harness: &Harness, name: &str) -> String {
    let body = serde_json::json!({ "name": name }).to_string();
    let answer = harness
        .admin(Method::POST, "/v1/admin/operators", Some(body))
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
    let value: serde_json::Value = answer.json();
    value["token"].as_str().unwrap().to_owned()
}

/// The next server-sent event of a stream (up to its blank line), keep-alive comments
/// skipped.
pub async fn next_event(stream: &mut reqwest::Response) -> String {
    let mut text = String::new();
    while !text.contains("\n\n") {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(30), stream.chunk())
            .await
            .expect("no event for 30 s")
            .unwrap()
            .expect("the stream ended");
        text.push_str(std::str::from_utf8(&chunk).unwrap());
        if text.starts_with(':') && text.contains("\n\n") {
            text.clear();
        }
    }
    text
}
