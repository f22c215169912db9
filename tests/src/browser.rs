//! A real browser for the console's tests: Debian's `chromium`, headless, driven by Debian's
//! `chromedriver` over the W3C WebDriver protocol (plain JSON over HTTP on loopback).
//!
//! [`Browser::start`] runs `chromedriver` as a child process on a free port, opens one session
//! with a profile of its own in the test's directory, and returns once the browser answers.
//! Dropping the [`Browser`] ends the session (which closes chromium) and kills `chromedriver`,
//! so a failing test leaves nothing running.
//!
//! The client is this file: the handful of WebDriver commands the tests use (navigate, find,
//! click, type, read text and attributes, run a script, cookies, dialogs, screenshots), each a
//! request on a private single-threaded runtime, so tests stay plain `#[test]` functions like
//! the rest of the harness. A WebDriver error comes back as [`HarnessError::Browser`] with the
//! command, the error code and chromedriver's message. Waits ([`Browser::wait_until`]) poll a
//! condition against a deadline that is only a safety net: nothing here measures time.
//!
//! The browser runs as the test's user; as root (CI) chromium needs `--no-sandbox`, which is
//! passed always: the browser only ever loads the test's own control plane on loopback. The
//! control plane's certificate comes from the test's own certificate authority, which the
//! browser does not know, so the session accepts it (`acceptInsecureCerts`); the `Secure`
//! cookie attribute still applies, as the pages are served over HTTPS.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

use crate::control_plane::free_port;
use crate::process::{POLL, Process, log_tail};
use crate::{HarnessError, Result};

/// Where Debian installs the browser and its driver.
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long chromedriver may take to answer `/status` after it was started.
const READY_DEADLINE: Duration = Duration::from_secs(30);
/// How long one WebDriver command may take (a page load included) before the harness gives up.
const COMMAND_DEADLINE: Duration = Duration::from_secs(60);
/// The default safety net of [`Browser::wait_until`].
pub const WAIT_DEADLINE: Duration = Duration::from_secs(30);
/// The window the pages are laid out in (and the screenshots' size).
const WINDOW: (u32, u32) = (1280, 900);
/// The key WebDriver uses for an element reference in JSON.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// An element of the current page, as WebDriver refers to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element(String);

/// A cookie as the browser holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cookie {
    /// Its name.
    pub name: String,
    /// Its value.
    pub value: String,
    /// Whether scripts cannot read it.
    pub http_only: bool,
    /// Whether it is sent over HTTPS only.
    pub secure: bool,
    /// `Strict`, `Lax` or `None`, as the browser reports it.
    pub same_site: Option<String>,
    /// When it expires (seconds since the epoch); `None` for a session cookie.
    pub expiry: Option<u64>,
}

/// A running headless chromium with one WebDriver session.
#[derive(Debug)]
pub struct Browser {
    runtime: tokio::runtime::Runtime,
    http: reqwest::Client,
    session: String,
    driver: String,
    log: PathBuf,
    _process: Process,
}

impl Browser {
    /// Starts chromedriver and a headless chromium whose profile and log live in `dir`. Fails
    /// saying which packages to install when either is missing.
    pub fn start(dir: &Path) -> Result<Self> {
        let (chromium, chromedriver) = (locate(CHROMIUM)?, locate(CHROMEDRIVER)?);
        let profile = dir.join("chromium-profile");
        std::fs::create_dir_all(&profile).map_err(HarnessError::io(format!(
            "create the browser profile {}",
            profile.display()
        )))?;
        let port = free_port()?;
        let log = dir.join("chromedriver.log");
        let mut command = Command::new(&chromedriver);
        command.arg(format!("--port={port}"));
        let mut process = Process::spawn("chromedriver", command, &log)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(HarnessError::io("start the browser's runtime"))?;
        let http = plain_http_client()?;
        let driver = format!("http://127.0.0.1:{port}");
        wait_ready(&runtime, &http, &driver, &mut process, &log)?;
        let capabilities = capabilities(&chromium, &profile);
        let answer = runtime
            .block_on(send(
                &http,
                reqwest::Method::POST,
                &format!("{driver}/session"),
                Some(capabilities),
            ))
            .map_err(|e| e.context("open a browser session", &log))?;
        let session = answer
            .get("sessionId")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                browser_error(
                    "open a browser session",
                    "no session id",
                    &answer.to_string(),
                )
            })?
            .to_owned();
        Ok(Self {
            runtime,
            http,
            session,
            driver,
            log,
            _process: process,
        })
    }

    /// Loads `url` and returns once the page has loaded.
    pub fn goto(&self, url: &str) -> Result<()> {
        self.post("url", json!({ "url": url }), &format!("open {url}"))
            .map(drop)
    }

    /// The address of the current page.
    pub fn current_url(&self) -> Result<String> {
        string(self.get("url", "read the current address")?)
    }

    /// The current page's title.
    pub fn title(&self) -> Result<String> {
        string(self.get("title", "read the page title")?)
    }

    /// The current page's markup as the browser holds it now (scripts' changes included).
    pub fn source(&self) -> Result<String> {
        string(self.get("source", "read the page source")?)
    }

    /// The first element matching the CSS selector; an error when there is none.
    pub fn find(&self, css: &str) -> Result<Element> {
        let value = self.post(
            "element",
            json!({ "using": "css selector", "value": css }),
            &format!("find `{css}`"),
        )?;
        element(&value, css)
    }

    /// Every element matching the CSS selector, in document order (none is not an error).
    pub fn find_all(&self, css: &str) -> Result<Vec<Element>> {
        let value = self.post(
            "elements",
            json!({ "using": "css selector", "value": css }),
            &format!("find every `{css}`"),
        )?;
        let items = value.as_array().cloned().unwrap_or_default();
        items.iter().map(|item| element(item, css)).collect()
    }

    /// Waits until an element matches the CSS selector and returns it.
    pub fn wait_for(&self, css: &str) -> Result<Element> {
        let mut found = None;
        self.wait_until(&format!("an element matching `{css}`"), |browser| {
            found = browser.find_all(css)?.into_iter().next();
            Ok(found.is_some())
        })?;
        found.ok_or_else(|| browser_error("wait for an element", "vanished", css))
    }

    /// Waits until `check` returns true, polling it; the deadline ([`WAIT_DEADLINE`]) is only a
    /// safety net, and running out of it is an error carrying the page's text.
    pub fn wait_until(
        &self,
        what: &str,
        mut check: impl FnMut(&Self) -> Result<bool>,
    ) -> Result<()> {
        let started = Instant::now();
        loop {
            if check(self)? {
                return Ok(());
            }
            if started.elapsed() > WAIT_DEADLINE {
                let page = self
                    .find("body")
                    .and_then(|body| self.text(&body))
                    .unwrap_or_else(|e| format!("(the page cannot be read: {e})"));
                return Err(HarnessError::Timeout {
                    what: what.to_owned(),
                    report: format!(
                        "the page ({}) reads:\n{page}",
                        self.current_url().unwrap_or_default()
                    ),
                });
            }
            std::thread::sleep(POLL);
        }
    }

    /// Clicks the element.
    pub fn click(&self, element: &Element) -> Result<()> {
        self.post(&format!("element/{}/click", element.0), json!({}), "click")
            .map(drop)
    }

    /// Types `text` into the element (for a file input: a path to upload).
    pub fn type_text(&self, element: &Element, text: &str) -> Result<()> {
        self.post(
            &format!("element/{}/value", element.0),
            json!({ "text": text }),
            "type into an element",
        )
        .map(drop)
    }

    /// Empties an input or text area.
    pub fn clear(&self, element: &Element) -> Result<()> {
        self.post(
            &format!("element/{}/clear", element.0),
            json!({}),
            "clear an element",
        )
        .map(drop)
    }

    /// The element's rendered text.
    pub fn text(&self, element: &Element) -> Result<String> {
        string(self.get(
            &format!("element/{}/text", element.0),
            "read an element's text",
        )?)
    }

    /// The element's attribute, `None` when it has none.
    pub fn attribute(&self, element: &Element, name: &str) -> Result<Option<String>> {
        let value = self.get(
            &format!("element/{}/attribute/{name}", element.0),
            &format!("read the attribute `{name}`"),
        )?;
        Ok(value.as_str().map(str::to_owned))
    }

    /// Runs `script` as the body of a function in the page, with `args`, and returns what it
    /// returns.
    pub fn execute(&self, script: &str, args: Vec<Value>) -> Result<Value> {
        self.post(
            "execute/sync",
            json!({ "script": script, "args": args }),
            "run a script in the page",
        )
    }

    /// The cookies the browser holds for the current page.
    pub fn cookies(&self) -> Result<Vec<Cookie>> {
        let value = self.get("cookie", "read the cookies")?;
        Ok(value
            .as_array()
            .map(|items| items.iter().map(cookie).collect())
            .unwrap_or_default())
    }

    /// The text of the open dialog (`alert`, `confirm`), if one is open.
    pub fn dialog_text(&self) -> Result<Option<String>> {
        match self.get("alert/text", "read the dialog") {
            Ok(value) => Ok(value.as_str().map(str::to_owned)),
            Err(HarnessError::Browser { code, .. }) if code == "no such alert" => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Accepts the open dialog (OK).
    pub fn accept_dialog(&self) -> Result<()> {
        self.post("alert/accept", json!({}), "accept the dialog")
            .map(drop)
    }

    /// Dismisses the open dialog (Cancel).
    pub fn dismiss_dialog(&self) -> Result<()> {
        self.post("alert/dismiss", json!({}), "dismiss the dialog")
            .map(drop)
    }

    /// Saves a PNG of the window to `path`.
    pub fn screenshot(&self, path: &Path) -> Result<()> {
        let encoded = string(self.get("screenshot", "take a screenshot")?)?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_bytes())
            .map_err(|e| browser_error("take a screenshot", "not base-64", &e.to_string()))?;
        std::fs::write(path, png).map_err(HarnessError::io(format!("write {}", path.display())))
    }

    /// What the page wrote to its console and what the browser reported about it (CSP
    /// violations included), since the last call.
    pub fn console_log(&self) -> Result<Vec<String>> {
        let value = self.post(
            "se/log",
            json!({ "type": "browser" }),
            "read the browser's log",
        )?;
        Ok(value
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .filter_map(|entry| entry.get("message").and_then(Value::as_str))
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default())
    }

    /// chromedriver's own log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    fn get(&self, command: &str, what: &str) -> Result<Value> {
        self.call(reqwest::Method::GET, command, None, what)
    }

    fn post(&self, command: &str, body: Value, what: &str) -> Result<Value> {
        self.call(reqwest::Method::POST, command, Some(body), what)
    }

    fn call(
        &self,
        method: reqwest::Method,
        command: &str,
        body: Option<Value>,
        what: &str,
    ) -> Result<Value> {
        let url = format!("{}/session/{}/{command}", self.driver, self.session);
        self.runtime
            .block_on(send(&self.http, method, &url, body))
            .map_err(|e| e.context(what, &self.log))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ending the session closes chromium; chromedriver itself is killed with the process
        // handle. A failure here leaves only a process the kill below ends.
        let url = format!("{}/session/{}", self.driver, self.session);
        let _ = self
            .runtime
            .block_on(send(&self.http, reqwest::Method::DELETE, &url, None));
    }
}

/// A failed WebDriver exchange, before it is given its context.
enum Failure {
    /// The request did not complete.
    Transport(String),
    /// chromedriver answered with a WebDriver error.
    WebDriver { code: String, message: String },
}

impl Failure {
    fn context(self, what: &str, log: &Path) -> HarnessError {
        match self {
            Self::Transport(message) => browser_error(
                what,
                "no answer from chromedriver",
                &format!("{message}\nthe end of its log:\n{}", log_tail(log, 20)),
            ),
            Self::WebDriver { code, message } => browser_error(what, &code, &message),
        }
    }
}

/// Sends one WebDriver command and returns the answer's `value`.
async fn send(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> std::result::Result<Value, Failure> {
    let mut request = http.request(method, url).timeout(COMMAND_DEADLINE);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request
        .send()
        .await
        .map_err(|e| Failure::Transport(e.to_string()))?;
    let status = response.status();
    let answer: Value = response
        .json()
        .await
        .map_err(|e| Failure::Transport(format!("an answer that is not JSON ({status}): {e}")))?;
    let value = answer.get("value").cloned().unwrap_or(Value::Null);
    if status.is_success() {
        return Ok(value);
    }
    let field = |name: &str| {
        value
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    Err(Failure::WebDriver {
        code: field("error"),
        message: field("message"),
    })
}

/// Polls chromedriver's `/status` until it says it is ready.
fn wait_ready(
    runtime: &tokio::runtime::Runtime,
    http: &reqwest::Client,
    driver: &str,
    process: &mut Process,
    log: &Path,
) -> Result<()> {
    let started = Instant::now();
    loop {
        process.check_running()?;
        let status = runtime.block_on(send(
            http,
            reqwest::Method::GET,
            &format!("{driver}/status"),
            None,
        ));
        if let Ok(value) = status
            && value.get("ready").and_then(Value::as_bool) == Some(true)
        {
            return Ok(());
        }
        if started.elapsed() > READY_DEADLINE {
            return Err(HarnessError::Timeout {
                what: format!("chromedriver to be ready on {driver}"),
                report: log_tail(log, 30),
            });
        }
        std::thread::sleep(POLL);
    }
}

/// The session's capabilities: headless chromium with its own profile, a fixed window, the
/// test CA's certificate accepted, and the page's console kept for [`Browser::console_log`].
fn capabilities(chromium: &Path, profile: &Path) -> Value {
    let (width, height) = WINDOW;
    json!({
        "capabilities": {
            "alwaysMatch": {
                "browserName": "chrome",
                "acceptInsecureCerts": true,
                "timeouts": { "script": 30_000, "pageLoad": 30_000, "implicit": 0 },
                "goog:loggingPrefs": { "browser": "ALL" },
                "goog:chromeOptions": {
                    "binary": chromium,
                    "args": [
                        "--headless=new",
                        "--no-sandbox",
                        "--disable-dev-shm-usage",
                        "--disable-gpu",
                        "--no-first-run",
                        "--disable-extensions",
                        "--disable-background-networking",
                        "--disable-component-update",
                        "--disable-sync",
                        "--lang=en-US",
                        format!("--window-size={width},{height}"),
                        format!("--user-data-dir={}", profile.display()),
                    ],
                },
            },
        },
    })
}

/// An HTTP client for chromedriver on loopback (plain HTTP; the TLS configuration is never used).
fn plain_http_client() -> Result<reqwest::Client> {
    let tls = rustls::ClientConfig::builder_with_provider(fleetnode_tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| browser_error("make a client for chromedriver", "tls", &e.to_string()))?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .no_proxy()
        .build()
        .map_err(|e| browser_error("make a client for chromedriver", "setup", &e.to_string()))
}

/// `path` when it exists, or an error naming the Debian packages to install.
fn locate(path: &str) -> Result<PathBuf> {
    let path = PathBuf::from(path);
    if path.is_file() {
        return Ok(path);
    }
    Err(HarnessError::Setup {
        what: "the browser".into(),
        message: format!(
            "{} is missing: install Debian's packages with `apt-get install -y chromium chromium-driver` \
             (`tests/run-all.sh` does as root)",
            path.display()
        ),
    })
}

fn element(value: &Value, css: &str) -> Result<Element> {
    value
        .get(ELEMENT_KEY)
        .and_then(Value::as_str)
        .map(|id| Element(id.to_owned()))
        .ok_or_else(|| {
            browser_error(
                &format!("find `{css}`"),
                "no element reference",
                &value.to_string(),
            )
        })
}

fn cookie(value: &Value) -> Cookie {
    let text = |name: &str| value.get(name).and_then(Value::as_str).map(str::to_owned);
    let flag = |name: &str| value.get(name).and_then(Value::as_bool).unwrap_or(false);
    Cookie {
        name: text("name").unwrap_or_default(),
        value: text("value").unwrap_or_default(),
        http_only: flag("httpOnly"),
        secure: flag("secure"),
        same_site: text("sameSite"),
        expiry: value.get("expiry").and_then(Value::as_u64),
    }
}

fn string(value: Value) -> Result<String> {
    match value {
        Value::String(text) => Ok(text),
        other => Err(browser_error(
            "read a text",
            "not a string",
            &other.to_string(),
        )),
    }
}

fn browser_error(what: &str, code: &str, message: &str) -> HarnessError {
    HarnessError::Browser {
        what: what.to_owned(),
        code: code.to_owned(),
        message: message.to_owned(),
    }
}
