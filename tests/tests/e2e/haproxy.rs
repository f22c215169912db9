//! Debian's `haproxy` in TCP mode, `send-proxy-v2`, in front of two real control planes, with
//! real agents authenticating by client certificate through it, each reaching the balancer from
//! an address of its own: the fleet converges, the servers see each client's own address (never
//! the balancer's) and apply the per-source limit to it, a PROXY header from an address that is not the balancer is refused, and when
//! the serving control plane dies the standby takes over behind the same address.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use fleetnode_tests::DEFAULT_DEADLINE;
use fleetnode_tests::balanced::{BALANCER, Balanced};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::common::run;

/// Connections one source may hold on each control plane in this test: above what one agent
/// holds (its long-poll, and its heartbeats and events), far below the default.
const PER_SOURCE: usize = 6;
/// Where the test's own probing connections come from: neither the agents' 127.0.0.1 nor the
/// balancer's address.
const PROBE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 9);
/// A client that is not the balancer and sends a PROXY header anyway.
const STRANGER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);

/// TLS clients from chosen loopback addresses, trusting the servers' CA, no client certificate.
struct Prober {
    runtime: tokio::runtime::Runtime,
    connector: TlsConnector,
}

impl Prober {
    fn new(ca: &Path) -> Self {
        let roots = fleetnode_tls::read_roots(ca).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(fleetnode_tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Self {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            connector: TlsConnector::from(Arc::new(config)),
        }
    }

    /// From `from` to 127.0.0.1:`port`: `prelude` raw, then TLS and `GET /healthz` on a
    /// connection kept alive; the connection and the whole answer, or the handshake's error.
    fn healthz(
        &self,
        from: Ipv4Addr,
        port: u16,
        prelude: &[u8],
    ) -> Result<(TlsStream<TcpStream>, String), String> {
        self.runtime.block_on(async {
            let socket = TcpSocket::new_v4().unwrap();
            socket.bind(SocketAddr::from((from, 0))).unwrap();
            let mut tcp = socket
                .connect(SocketAddr::from(([127, 0, 0, 1], port)))
                .await
                .unwrap();
            tcp.write_all(prelude).await.unwrap();
            let name = ServerName::try_from("localhost").unwrap();
            let mut tls = self
                .connector
                .connect(name, tcp)
                .await
                .map_err(|e| e.to_string())?;
            tls.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n")
                .await
                .unwrap();
            // The whole answer: `ok` from /healthz, or an error body, which ends in `}`; a
            // refused connection is closed after it.
            let mut answer = Vec::new();
            let mut chunk = [0u8; 4096];
            while !(answer.ends_with(b"ok\n") || answer.ends_with(b"}")) {
                let read = tls.read(&mut chunk).await.map_err(|e| e.to_string())?;
                if read == 0 {
                    break;
                }
                answer.extend_from_slice(&chunk[..read]);
            }
            Ok((tls, String::from_utf8_lossy(&answer).into_owned()))
        })
    }
}

/// A PROXY protocol v2 header naming a TCP-over-IPv4 client, written from the specification.
fn proxy_header(client: [u8; 4], port: u16) -> Vec<u8> {
    let mut bytes = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    bytes.extend_from_slice(&client);
    bytes.extend_from_slice(&[127, 0, 0, 1]);
    bytes.extend_from_slice(&port.to_be_bytes());
    bytes.extend_from_slice(&8443u16.to_be_bytes());
    bytes
}

/// The log lines of `log` that contain `needle`.
fn lines_with(log: &Path, needle: &str) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .filter(|line| line.contains(needle))
        .map(str::to_owned)
        .collect()
}

#[test]
fn agents_behind_haproxy_are_seen_and_limited_as_themselves() {
    run(|| {
        let mut b = Balanced::start(&["web-01", "web-02"], PER_SOURCE)?;
        let balancer = format!("balancer={BALANCER}:");

        // A deployment through the balancer, every agent authenticated by its certificate.
        let gen2 = b.add_closure("nixos-system-gen-2")?;
        b.set_targets(&gen2, &["--soak", "1s"])?;
        for (id, path) in &gen2 {
            b.wait_for(id, "converged on generation 2", |d| {
                d.row.phase.name() == "converged" && d.row.current.as_ref() == Some(path)
            })?;
        }
        for (host, (_, path)) in b.hosts.iter().zip(&gen2) {
            assert_eq!(host.root().current().as_ref(), Some(path));
        }

        // The server saw each agent at its own address, forwarded by the balancer.
        let forwarded = lines_with(b.servers[0].log(), "a trusted proxy forwarded a connection");
        for host in &b.hosts {
            assert!(
                forwarded.iter().any(|line| {
                    line.contains(&format!("peer={}:", host.address)) && line.contains(&balancer)
                }),
                "no connection of {} ({}) forwarded by the balancer:\n{forwarded:#?}\n{}",
                host.id,
                host.address,
                b.report()
            );
        }

        // The limit applies to each client, not to the balancer. The probe holds its
        // PER_SOURCE connections through the balancer; the balancer then carries more than
        // PER_SOURCE (the agents' long-polls too), and a further client is still served.
        let prober = Prober::new(&b.server_ca());
        let port = b.haproxy.port();
        let mut held = Vec::new();
        for n in 0..PER_SOURCE {
            let (connection, head) = prober.healthz(PROBE, port, b"").unwrap();
            assert!(head.starts_with("HTTP/1.1 200"), "probe {n}: {head}");
            held.push(connection);
        }
        let (_other, head) = prober.healthz(Ipv4Addr::LOCALHOST, port, b"").unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}\n{}", b.report());
        let (_over, head) = prober.healthz(PROBE, port, b"").unwrap();
        assert!(head.starts_with("HTTP/1.1 429"), "{head}\n{}", b.report());
        assert!(
            head.contains(&format!(
                "too many connections from {PROBE}: at most {PER_SOURCE}"
            )),
            "{head}"
        );
        drop(held);
        let warned = lines_with(b.servers[0].log(), "reached its connection limit");
        assert!(
            warned
                .iter()
                .any(|line| line.contains(&format!("source={PROBE}"))),
            "{warned:#?}"
        );
        assert!(
            !warned
                .iter()
                .any(|line| line.contains(&format!("source={BALANCER}"))),
            "the balancer was limited: {warned:#?}"
        );

        // A PROXY header from an address that is not the balancer is not read: TLS fails on
        // it. Without one the same address is served.
        let direct = b.servers[0].port();
        let forged = prober.healthz(STRANGER, direct, &proxy_header([10, 1, 2, 3], 1234));
        assert!(forged.is_err(), "a forged header was accepted: {forged:?}");
        let (_plain, head) = prober.healthz(STRANGER, direct, b"").unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");

        // The serving control plane dies; the standby takes the store over, haproxy's check
        // sends the traffic to it, and the agents deploy through the same address.
        b.servers[0].kill()?;
        let gen3 = b.add_closure("nixos-system-gen-3")?;
        // The standby answers 503 until it has opened the store.
        let started = std::time::Instant::now();
        while let Err(error) = b.set_targets(&gen3, &["--soak", "1s"]) {
            assert!(
                started.elapsed() < DEFAULT_DEADLINE,
                "the standby never served: {error}\n{}",
                b.report()
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        for (id, path) in &gen3 {
            b.wait_for(id, "converged on generation 3 through the standby", |d| {
                d.row.phase.name() == "converged" && d.row.current.as_ref() == Some(path)
            })?;
        }
        let forwarded = lines_with(b.servers[1].log(), "a trusted proxy forwarded a connection");
        for host in &b.hosts {
            assert!(
                forwarded.iter().any(|line| {
                    line.contains(&format!("peer={}:", host.address)) && line.contains(&balancer)
                }),
                "{forwarded:#?}"
            );
        }
        Ok(())
    })
}

#[test]
fn replicas_on_postgres_behind_haproxy_share_the_fleet_and_survive_one_killed() {
    run(|| {
        let db = fleetnode_fixtures::postgres::shared()
            .unwrap()
            .database()
            .unwrap();
        let mut b = Balanced::start_on_database(&["web-01", "web-02"], PER_SOURCE, &db.url())?;
        let balancer = format!("balancer={BALANCER}:");
        let gen2 = b.add_closure("nixos-system-gen-2")?;
        b.set_targets(&gen2, &["--soak", "1s"])?;
        for (id, path) in &gen2 {
            b.wait_for(id, "converged on generation 2", |d| {
                d.row.phase.name() == "converged" && d.row.current.as_ref() == Some(path)
            })?;
        }
        // haproxy spreads the agents' connections over both replicas, each seeing the agents
        // themselves.
        for server in &b.servers {
            let forwarded = lines_with(server.log(), "a trusted proxy forwarded a connection");
            assert!(
                forwarded.iter().any(|line| line.contains(&balancer)),
                "replica {} served nothing through the balancer\n{}",
                server.port(),
                b.report()
            );
        }

        // One replica dies; the other already serves the same fleet, and the agents deploy
        // through the same address.
        b.servers[0].kill()?;
        let gen3 = b.add_closure("nixos-system-gen-3")?;
        let started = std::time::Instant::now();
        while let Err(error) = b.set_targets(&gen3, &["--soak", "1s"]) {
            assert!(
                started.elapsed() < DEFAULT_DEADLINE,
                "the remaining replica never took the command: {error}\n{}",
                b.report()
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        for (id, path) in &gen3 {
            let detail = b.wait_for(id, "converged on generation 3 through the survivor", |d| {
                d.row.phase.name() == "converged" && d.row.current.as_ref() == Some(path)
            })?;
            assert_eq!(detail.divergence, None, "{}", b.report());
        }
        Ok(())
    })
}
