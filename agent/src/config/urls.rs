//! `control_plane_url`: one URL, or a list of URLs of control-plane replicas (or of load
//! balancers in front of them), each checked as the single URL always was. The agent talks to
//! one of them at a time ([`crate::workers::control::Client`] says when it moves on).

use super::raw::UrlList;
use super::sections::invalid;
use super::{ConfigError, RawConfig};

/// The key, for error messages.
const KEY: &str = "control_plane_url";
/// Most URLs a list may hold: more replicas than this behind no balancer is a configuration
/// mistake, and the agent cycles through the list one failure at a time.
pub const MAX_CONTROL_PLANE_URLS: usize = 16;

/// The validated control-plane URLs: at least one, no duplicate, each without a trailing `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlPlaneUrls(Vec<String>);

impl ControlPlaneUrls {
    /// The URLs, in the order written (the agent starts with the first).
    pub fn as_slice(&self) -> &[String] {
        &self.0
    }

    /// The first URL.
    pub fn first(&self) -> &str {
        // Never empty: `parse` refuses an empty list and the type has no other constructor.
        self.0.first().map_or("", String::as_str)
    }
}

impl std::fmt::Display for ControlPlaneUrls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join(", "))
    }
}

/// Checks `control_plane_url`; an error names the offending entry (`control_plane_url[1]`)
/// when a list was written.
pub(super) fn control_plane_urls(raw: &RawConfig) -> Result<ControlPlaneUrls, ConfigError> {
    let list = raw.control_plane_url.as_ref().ok_or_else(|| {
        invalid(
            KEY,
            "missing; set it to the control plane's https:// URL (or a list of them)",
        )
    })?;
    check_list(list, raw.allow_insecure_http)
}

fn check_list(list: &UrlList, allow_insecure_http: bool) -> Result<ControlPlaneUrls, ConfigError> {
    if list.entries.is_empty() {
        return Err(invalid(
            KEY,
            "the list is empty; give at least one https:// URL",
        ));
    }
    if list.entries.len() > MAX_CONTROL_PLANE_URLS {
        return Err(invalid(
            KEY,
            format!(
                "the list has {} URLs, at most {MAX_CONTROL_PLANE_URLS} are accepted; put a load balancer in front of the replicas",
                list.entries.len()
            ),
        ));
    }
    let mut urls: Vec<String> = Vec::with_capacity(list.entries.len());
    for (index, entry) in list.entries.iter().enumerate() {
        let key = if list.is_list {
            format!("{KEY}[{index}]")
        } else {
            KEY.to_owned()
        };
        let url = check_url(entry, allow_insecure_http)
            .map_err(|message| invalid(&key, format!("{entry:?} {message}")))?;
        if let Some(first) = urls.iter().position(|seen| *seen == url) {
            return Err(invalid(
                &key,
                format!("{entry:?} repeats {KEY}[{first}]; list each address once"),
            ));
        }
        urls.push(url);
    }
    Ok(ControlPlaneUrls(urls))
}

/// One URL: `https://host[:port][/path]`, or `http://` to a loopback address when explicitly
/// allowed. Returns it without a trailing `/`, or what is wrong with it.
fn check_url(url: &str, allow_insecure_http: bool) -> Result<String, String> {
    let url = url.trim_end_matches('/');
    if let Some(rest) = url.strip_prefix("https://") {
        if rest.is_empty() || rest.starts_with('/') {
            return Err("has no host name".into());
        }
        return Ok(url.to_owned());
    }
    if let Some(rest) = url.strip_prefix("http://") {
        if !allow_insecure_http {
            return Err("uses plain http://, which is refused; use https:// (allow_insecure_http = true exists for loopback tests only)".into());
        }
        let authority = rest.split('/').next().unwrap_or_default();
        let host = authority
            .rsplit_once(':')
            .map_or(authority, |(host, _)| host)
            .trim_matches(|c| c == '[' || c == ']');
        let loopback = host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if !loopback {
            return Err("is not on loopback: allow_insecure_http only permits loopback addresses (127.0.0.1, ::1, localhost)".into());
        }
        return Ok(url.to_owned());
    }
    Err("must start with https://".into())
}
