//! The console's cost: how long the fleet page (and a filtered one, and a host's page) takes to
//! answer over real TLS with a large fleet, and what 50 pages following the fleet live cost the
//! server at rest.
//!
//! A server on loopback with a fresh redb store gets `--hosts` hosts through the API, an
//! operator signs in to the console, and each page is asked for `--rounds` times in a row on
//! one connection (the time is the client's, from request to the last byte, on loopback). Then
//! 50 live streams are opened and the process's resident memory and CPU time are read from
//! `/proc/self` before and after, and over 30 s at rest. Server and client share the process,
//! so the memory and CPU figures are upper bounds of the server's.
//!
//! `cargo bench -p fleetnode-control-plane --bench console_page -- --hosts 19000 --rounds 100`

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fleetnode_control_plane::fleet::StoreLocation;
use fleetnode_control_plane::{ServerOptions, Transport, start};
use fleetnode_fixtures::certs::TestCa;
use fleetnode_wire::Secret;
use futures_util::StreamExt;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

const TOKEN: &str = "console-bench-admin-token-0123456789abcdef";
const STREAMS: usize = 50;
const AT_REST: Duration = Duration::from_secs(30);

fn arg(name: &str, default: usize) -> usize {
    let words: Vec<String> = std::env::args().collect();
    words
        .iter()
        .position(|w| w == name)
        .and_then(|i| words.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let (hosts, rounds) = (arg("--hosts", 19_000), arg("--rounds", 100));
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("console bench CA").unwrap();
    let ca_file = ca.write(dir.path()).unwrap();
    let cert = ca.server().unwrap().write(dir.path(), "server").unwrap();
    let transport = Transport::Tls {
        cert: cert.cert,
        key: cert.key,
        client_ca: None,
    };
    let store = StoreLocation::Redb(dir.path().join("cp.redb"));
    let listen = SocketAddr::from(([127, 0, 0, 1], 0));
    let server = start(ServerOptions::new(
        listen,
        transport,
        Secret::new(TOKEN),
        store,
    ))
    .await
    .unwrap();
    let url = format!("https://localhost:{}", server.local_addr().port());
    let http = client(&ca_file);
    while http
        .get(format!("{url}/healthz"))
        .send()
        .await
        .map(|r| r.status().is_success())
        .ok()
        != Some(true)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let started = Instant::now();
    futures_util::stream::iter(0..hosts)
        .map(|i| {
            let (http, url) = (http.clone(), url.clone());
            async move {
                let tag = if i % 10 == 0 { "db" } else { "web" };
                let body = serde_json::json!({ "id": format!("h-{i:05}"), "tags": [tag] });
                let answer = http
                    .post(format!("{url}/v1/admin/hosts"))
                    .bearer_auth(TOKEN)
                    .body(body.to_string())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(answer.status(), 201);
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
    println!("{hosts} hosts added in {:.1?}", started.elapsed());

    let login = http
        .post(format!("{url}/console/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("origin", &url)
        .body(format!("token={TOKEN}&next=/console/"))
        .send()
        .await
        .unwrap();
    let cookie = login.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();

    for path in [
        "/console/",
        "/console/?tag=db",
        "/console/?phase=idle&q=h-18",
        "/console/hosts/h-00100",
    ] {
        let mut times = Vec::with_capacity(rounds);
        let mut size = 0;
        for _ in 0..rounds {
            let asked = Instant::now();
            let page = http
                .get(format!("{url}{path}"))
                .header("cookie", &cookie)
                .send()
                .await
                .unwrap();
            assert_eq!(page.status(), 200, "{path}");
            size = page.bytes().await.unwrap().len();
            times.push(asked.elapsed());
        }
        times.sort();
        let at = |q: usize| times[(times.len() * q / 100).min(times.len() - 1)];
        println!(
            "{path}: min {:.1?}, p50 {:.1?}, p99 {:.1?}, max {:.1?}; {size} bytes",
            times[0],
            at(50),
            at(99),
            times[times.len() - 1]
        );
    }

    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss_before, _) = (rss_kib(), cpu_secs());
    let mut streams = Vec::with_capacity(STREAMS);
    for _ in 0..STREAMS {
        let mut stream = http
            .get(format!("{url}/console/events"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(stream.status(), 200);
        stream.chunk().await.unwrap();
        streams.push(stream);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss_after, cpu_before) = (rss_kib(), cpu_secs());
    tokio::time::sleep(AT_REST).await;
    let cpu_at_rest = cpu_secs() - cpu_before;
    println!(
        "{STREAMS} live streams: resident {rss_before} KiB -> {rss_after} KiB (+{} KiB); CPU over {AT_REST:?} at rest: {cpu_at_rest:.2} s ({:.3} % of a core)",
        rss_after.saturating_sub(rss_before),
        cpu_at_rest * 100.0 / AT_REST.as_secs_f64()
    );
    drop(streams);
    server.stop().await.unwrap();
}

fn client(ca_file: &std::path::Path) -> reqwest::Client {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // Linux's USER_HZ is 100 on every architecture it runs this on.
    ticks as f64 / 100.0
}
