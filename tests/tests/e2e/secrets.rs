//! No secret leaks: with the real control plane and agent logging at trace level, through an
//! activation and a local pause, neither the host token, the admin token nor the server's TLS
//! key appears in either process's `/proc/<pid>/cmdline` or `/proc/<pid>/environ`, in any line
//! either logged, in the agent's status, the control plane's view of the host, or either
//! side's metrics.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;

use fleetnode_tests::{Harness, Health, Options};

use crate::common::run;

/// A secret and where it came from.
struct Secret {
    what: String,
    value: String,
}

/// The secrets of the scenario: both tokens whole, and every line of the key's PEM body (a
/// line is 64 characters of base64; any of them in a log means the key leaked).
fn secrets(h: &Harness) -> Vec<Secret> {
    let read = |path: &Path| std::fs::read_to_string(path).unwrap();
    let files = h.control_plane().files();
    let token_file = h.work_dir().join(format!("{}.token", h.host()));
    let mut secrets = vec![
        Secret {
            what: "the host token".into(),
            value: read(&token_file).trim().to_owned(),
        },
        Secret {
            what: "the admin token".into(),
            value: read(&files.admin_token).trim().to_owned(),
        },
    ];
    for (n, line) in read(&files.key)
        .lines()
        .filter(|line| !line.starts_with("-----") && line.len() >= 32)
        .enumerate()
    {
        secrets.push(Secret {
            what: format!("line {} of the server's TLS key", n + 1),
            value: line.to_owned(),
        });
    }
    for secret in &secrets {
        assert!(
            secret.value.len() >= 16,
            "{} is too short to search for",
            secret.what
        );
    }
    secrets
}

fn assert_clean(secrets: &[Secret], place: &str, text: &str) {
    for secret in secrets {
        assert!(
            !text.contains(&secret.value),
            "{} appears in {place}",
            secret.what
        );
    }
}

/// `/proc/<pid>/<file>` with its NULs as newlines.
fn proc_file(pid: u32, file: &str) -> String {
    let bytes = std::fs::read(format!("/proc/{pid}/{file}")).unwrap();
    String::from_utf8_lossy(&bytes).replace('\0', "\n")
}

/// The agent's metrics, plain HTTP on loopback.
fn agent_metrics(h: &Harness) -> String {
    let mut stream = TcpStream::connect(h.agent().admin()).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

/// The control plane's metrics over its TLS listener, with the admin token.
fn control_plane_metrics(h: &Harness, admin_token: &str) -> String {
    let files = h.control_plane().files();
    let roots = fleetnode_tls::read_roots(&files.ca).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(fleetnode_tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let url = h.control_plane().url();
    let address = url.trim_start_matches("https://");
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let connection = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut tls = rustls::StreamOwned::new(connection, TcpStream::connect(address).unwrap());
    write!(
        tls,
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {admin_token}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = Vec::new();
    // The server may close without a close_notify; what arrived is the answer.
    let _ = tls.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn no_token_or_key_reaches_argv_environment_logs_status_or_metrics() {
    run(|| {
        let mut h = Harness::start_with(Options {
            log_filter: "trace".into(),
            ..Options::default()
        })?;
        let secrets = secrets(&h);
        let gen2 = h.add_closure("nixos-system-web-01-gen-2", Health::Healthy)?;
        let revision = h.set_target(&gen2, &["--soak", "3s"])?;
        h.wait_settled(revision, "converged")?;

        for (who, pid) in [
            ("the agent", h.agent().pid().unwrap()),
            ("the control plane", h.control_plane().pid().unwrap()),
        ] {
            assert_clean(
                &secrets,
                &format!("{who}'s cmdline"),
                &proc_file(pid, "cmdline"),
            );
            assert_clean(
                &secrets,
                &format!("{who}'s environ"),
                &proc_file(pid, "environ"),
            );
        }

        let status = h.agent_status()?.to_string();
        assert!(status.contains(gen2.as_str()), "{status}");
        assert_clean(&secrets, "the agent's status", &status);
        let host = h.cp(&["host", h.host()])?.stdout;
        assert!(host.contains(h.host()), "{host}");
        assert_clean(&secrets, "fleetnode-cp host", &host);

        let metrics = agent_metrics(&h);
        assert!(metrics.contains("fleetnode_agent_build_info"), "{metrics}");
        assert_clean(&secrets, "the agent's metrics", &metrics);
        let admin_token = &secrets[1].value;
        let metrics = control_plane_metrics(&h, admin_token);
        assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
        assert!(metrics.contains("# TYPE"), "{metrics}");
        assert_clean(&secrets, "the control plane's metrics", &metrics);

        for (who, log) in [
            ("the agent's log", h.agent().log().to_owned()),
            (
                "the control plane's log",
                h.control_plane().log().to_owned(),
            ),
        ] {
            let text = std::fs::read_to_string(&log).unwrap();
            // The filter reached the process: dependencies' trace lines are there too.
            assert!(
                text.contains("TRACE"),
                "{who} has no trace line: {}",
                log.display()
            );
            assert_clean(&secrets, who, &text);
        }
        Ok(())
    });
}
