//! Probes against real processes, real sockets, a real TLS server and the fake systemd.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleetnode_fixtures::certs::TestCa;
use fleetnode_fixtures::fakeroot::FakeRoot;
use fleetnode_state_machine::{
    Event, Millis, ProbeId, ProbeMode, ProbeResult, RealiseResult, StorePath, SwitchId, SwitchJob,
    SystemView, UnitState,
};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Checker, HttpProber, exec, run_with, tcp_check};
use crate::config::{ProbeCheck, ProbeSpec};
use crate::input::Input;
use crate::system::tests::system_for;
use crate::system::{System, SystemError};

const PATIENCE: Duration = Duration::from_secs(30);

fn spec(name: &str, interval_ms: u64, timeout_ms: u64, check: ProbeCheck) -> ProbeSpec {
    ProbeSpec {
        id: ProbeId::parse(name).unwrap(),
        mode: ProbeMode::Enforce,
        interval: Millis(interval_ms),
        timeout: Millis(timeout_ms),
        check,
    }
}

fn argv(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

/// Whether a process is gone (or a zombie waiting to be reaped by whoever adopted it).
fn is_dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

async fn until(condition: impl Fn() -> bool) {
    tokio::time::timeout(PATIENCE, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn exec_passes_on_exit_0_and_fails_with_the_exit_code_and_output() {
    let (passed, detail) = exec::check(&argv(&["true"]), Duration::from_secs(10)).await;
    assert!(passed, "{detail}");
    assert_eq!(detail, "exit status 0");

    let failing = argv(&[
        "sh",
        "-c",
        "echo checking; echo database unreachable >&2; exit 3",
    ]);
    let (passed, detail) = exec::check(&failing, Duration::from_secs(10)).await;
    assert!(!passed);
    assert_eq!(detail, "exit status 3: database unreachable");

    let (passed, detail) =
        exec::check(&argv(&["/nonexistent/check"]), Duration::from_secs(1)).await;
    assert!(!passed);
    assert!(
        detail.starts_with("cannot run /nonexistent/check"),
        "{detail}"
    );
}

#[tokio::test]
async fn exec_timeout_kills_the_whole_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("grandchild");
    let script = format!("sleep 300 & echo $! > {}; wait", pid_file.display());
    let (passed, detail) =
        exec::check(&argv(&["sh", "-c", &script]), Duration::from_millis(500)).await;
    assert!(!passed);
    assert!(
        detail.contains("timed out") && detail.contains("process group was killed"),
        "{detail}"
    );
    let grandchild: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    until(|| is_dead(grandchild)).await;
}

#[tokio::test]
async fn exec_detail_stays_short_for_chatty_probes() {
    let noisy = argv(&["sh", "-c", "yes fleetnode | head -c 3000000; exit 1"]);
    let (passed, detail) = exec::check(&noisy, Duration::from_secs(20)).await;
    assert!(!passed);
    assert!(detail.starts_with("exit status 1: "), "{detail}");
    assert!(detail.len() < 300);
}

/// Answers every connection with one fixed HTTP response.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, status: &str, body: &str) {
    let mut request = Vec::new();
    let mut buffer = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buffer[..n]),
        }
    }
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

async fn http_server(status: &'static str, body: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream, status, body));
        }
    });
    format!("http://{address}")
}

#[tokio::test]
async fn http_checks_status_and_body() {
    let prober = HttpProber::with_roots(RootCertStore::empty()).unwrap();
    let timeout = Duration::from_secs(10);
    let healthy = http_server("200 OK", "status: all good").await;
    assert_eq!(
        prober.check(&healthy, 200, Some("all good"), timeout).await,
        (true, "HTTP 200, body contains \"all good\"".to_owned())
    );
    assert_eq!(
        prober.check(&healthy, 200, Some("degraded"), timeout).await,
        (
            false,
            "HTTP 200, but the body does not contain \"degraded\"".to_owned()
        )
    );
    let down = http_server("503 Service Unavailable", "").await;
    assert_eq!(
        prober.check(&down, 200, None, timeout).await,
        (false, "HTTP 503, expected 200".to_owned())
    );
    assert_eq!(
        prober.check(&down, 503, None, timeout).await,
        (true, "HTTP 503".to_owned())
    );
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let (passed, detail) = prober.check(&url, 200, None, timeout).await;
    assert!(!passed);
    assert!(
        detail.contains("failed") && detail.contains("onnect"),
        "{detail}"
    );
}

#[tokio::test]
async fn https_verifies_the_server_certificate() {
    let ca = TestCa::new("fleetnode probe test CA").unwrap();
    let issued = ca.server().unwrap();
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(issued.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
    let key = PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "https://localhost:{}/health",
        listener.local_addr().unwrap().port()
    );
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(stream).await {
                    serve(tls, "200 OK", "ok").await;
                }
            });
        }
    });
    let timeout = Duration::from_secs(10);

    // The system's roots do not include a test CA: verification must fail.
    let system = HttpProber::with_system_roots().unwrap();
    let (passed, detail) = system.check(&url, 200, None, timeout).await;
    assert!(!passed);
    assert!(detail.to_lowercase().contains("certificate"), "{detail}");

    let mut roots = RootCertStore::empty();
    let ca_der = CertificateDer::from_pem_slice(ca.pem().as_bytes()).unwrap();
    roots.add(ca_der).unwrap();
    let trusting = HttpProber::with_roots(roots).unwrap();
    assert_eq!(
        trusting.check(&url, 200, Some("ok"), timeout).await,
        (true, "HTTP 200, body contains \"ok\"".to_owned())
    );
}

#[tokio::test]
async fn tcp_passes_on_an_open_port_and_fails_on_a_closed_one() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (passed, detail) = tcp_check(&address, Duration::from_secs(5)).await;
    assert!(passed, "{detail}");
    drop(listener);
    let (passed, detail) = tcp_check(&address, Duration::from_secs(5)).await;
    assert!(!passed);
    assert!(
        detail.starts_with(&format!("cannot connect to {address}")),
        "{detail}"
    );
}

#[tokio::test]
async fn systemd_asks_whether_the_unit_is_active() {
    let fake = FakeRoot::new();
    fake.set_unit_active("nginx.service", true);
    fake.set_unit_active("postgresql.service", false);
    let checker = Checker {
        system: Arc::new(system_for(&fake)),
        http: HttpProber::with_roots(RootCertStore::empty()).unwrap(),
    };
    let probe = |unit: &str| {
        spec(
            "unit",
            1000,
            5000,
            ProbeCheck::Systemd {
                unit: unit.to_owned(),
            },
        )
    };
    assert_eq!(
        checker.check(&probe("nginx.service")).await,
        (true, "nginx.service is active".to_owned())
    );
    assert_eq!(
        checker.check(&probe("postgresql.service")).await,
        (false, "postgresql.service is not active".to_owned())
    );
    assert_eq!(
        checker.check(&probe("absent.service")).await,
        (false, "absent.service is not active".to_owned())
    );
    let is_active = fake
        .command_log()
        .into_iter()
        .find(|argv| argv[0] == "systemctl")
        .unwrap();
    assert_eq!(is_active, ["systemctl", "is-active", "--", "nginx.service"]);
}

fn result_of(input: Option<Input>) -> ProbeResult {
    match input {
        Some(Input::Event(Event::ProbeResult(result))) => result,
        other => panic!("expected a probe result, got {other:?}"),
    }
}

#[tokio::test]
async fn reset_kills_old_probes_and_only_the_new_epoch_reports() {
    let fake = FakeRoot::new();
    fake.set_unit_active("sshd.service", true);
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("slow");
    let slow = format!("echo $$ > {}; exec sleep 300", pid_file.display());
    let specs = vec![
        spec(
            "slow",
            1000,
            600_000,
            ProbeCheck::Exec {
                argv: argv(&["sh", "-c", &slow]),
            },
        ),
        spec(
            "sshd",
            1000,
            5000,
            ProbeCheck::Systemd {
                unit: "sshd.service".to_owned(),
            },
        ),
    ];
    let (epoch, epochs) = tokio::sync::watch::channel(1);
    let (inputs, mut results) = mpsc::channel(64);
    let cancel = CancellationToken::new();
    let system = Arc::new(system_for(&fake));
    let http = HttpProber::with_roots(RootCertStore::empty()).unwrap();
    let worker = {
        let cancel = cancel.clone();
        tokio::spawn(async move { run_with(specs, system, http, epochs, inputs, cancel).await })
    };
    let first = result_of(
        tokio::time::timeout(PATIENCE, results.recv())
            .await
            .unwrap(),
    );
    assert_eq!(
        (first.probe.as_str(), first.epoch, first.passed),
        ("sshd", 1, true)
    );
    until(|| pid_file.exists()).await;
    let old_slow: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    std::fs::remove_file(&pid_file).unwrap();

    epoch.send_replace(2);
    // Results already queued before the reset may be of epoch 1; once epoch 2 shows up, no
    // epoch-1 result may follow, and the slow probe of epoch 1 never reports.
    let mut seen_new = 0;
    while seen_new < 3 {
        let result = result_of(
            tokio::time::timeout(PATIENCE, results.recv())
                .await
                .unwrap(),
        );
        assert_ne!(
            result.probe.as_str(),
            "slow",
            "a killed probe reported: {result:?}"
        );
        if result.epoch == 2 {
            seen_new += 1;
        } else {
            assert_eq!(
                seen_new, 0,
                "stale result after the new epoch began: {result:?}"
            );
        }
    }
    until(|| is_dead(old_slow)).await;
    // The slow probe restarted in the new epoch.
    until(|| pid_file.exists()).await;
    let new_slow: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_ne!(new_slow, old_slow);

    cancel.cancel();
    worker.await.unwrap().unwrap();
    until(|| is_dead(new_slow)).await;
}

/// A backend that answers `is-active` instantly and records when it was asked, on tokio's
/// (paused) clock.
#[derive(Default)]
struct Clocked {
    asked: Mutex<Vec<(String, Duration)>>,
    start: Mutex<Option<tokio::time::Instant>>,
}

impl System for Clocked {
    async fn observe(&self) -> Result<SystemView, SystemError> {
        Ok(SystemView::default())
    }
    async fn boot_id(&self) -> Result<Option<String>, SystemError> {
        Ok(None)
    }
    async fn realise(&self, _: &StorePath) -> RealiseResult {
        RealiseResult::Realised
    }
    async fn keep_generations(
        &self,
        _: &std::collections::BTreeSet<StorePath>,
    ) -> Result<(), SystemError> {
        Ok(())
    }
    async fn start_switch(
        &self,
        _: SwitchId,
        _: &SwitchJob,
    ) -> Result<crate::system::Launch, SystemError> {
        Ok(crate::system::Launch::Started)
    }
    async fn switch_state(&self, _: SwitchId) -> Result<UnitState, SystemError> {
        Ok(UnitState::Gone)
    }
    async fn stop_switch(&self, _: SwitchId) -> Result<(), SystemError> {
        Ok(())
    }
    async fn reboot(&self) -> Result<(), SystemError> {
        Ok(())
    }
    async fn agent_upgrade(&self) -> Option<String> {
        None
    }
    async fn unit_active(&self, unit: &str) -> Result<bool, SystemError> {
        let start = self.start.lock().unwrap().unwrap();
        let at = tokio::time::Instant::now() - start;
        self.asked.lock().unwrap().push((unit.to_owned(), at));
        Ok(true)
    }
}

#[tokio::test(start_paused = true)]
async fn each_probe_runs_on_its_own_interval() {
    let system = Arc::new(Clocked::default());
    *system.start.lock().unwrap() = Some(tokio::time::Instant::now());
    let specs = vec![
        spec(
            "fast",
            2000,
            1000,
            ProbeCheck::Systemd {
                unit: "fast.service".to_owned(),
            },
        ),
        spec(
            "slow",
            5000,
            1000,
            ProbeCheck::Systemd {
                unit: "slow.service".to_owned(),
            },
        ),
    ];
    let (_epoch, epochs) = tokio::sync::watch::channel(7);
    let (inputs, mut results) = mpsc::channel(64);
    let cancel = CancellationToken::new();
    let worker = {
        let cancel = cancel.clone();
        let system = system.clone();
        let http = HttpProber::with_roots(RootCertStore::empty()).unwrap();
        tokio::spawn(async move { run_with(specs, system, http, epochs, inputs, cancel).await })
    };
    tokio::time::sleep(Duration::from_millis(10_500)).await;
    cancel.cancel();
    worker.await.unwrap().unwrap();

    let asked = system.asked.lock().unwrap().clone();
    let times = |unit: &str| -> Vec<u64> {
        asked
            .iter()
            .filter(|(u, _)| u == unit)
            .map(|(_, at)| at.as_secs())
            .collect()
    };
    assert_eq!(times("fast.service"), [0, 2, 4, 6, 8, 10]);
    assert_eq!(times("slow.service"), [0, 5, 10]);
    let mut count = 0;
    while let Ok(input) = results.try_recv() {
        let result = result_of(Some(input));
        assert_eq!(result.epoch, 7);
        assert!(result.passed);
        count += 1;
    }
    assert_eq!(count, 9);
}

#[test]
fn ca_bundle_loading_skips_unparsable_files() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    assert!(super::http::load_bundle(&junk).is_none());
    assert!(super::http::load_bundle(Path::new("/nonexistent/bundle.pem")).is_none());
    let ca = TestCa::new("bundle").unwrap();
    let good = dir.path().join("good.pem");
    std::fs::write(&good, ca.pem()).unwrap();
    assert_eq!(super::http::load_bundle(&good).unwrap().len(), 1);
}
