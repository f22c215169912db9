//! The control plane under load: started as a child process on a fresh store, its hosts
//! registered through the operator API, and the operator's side of a dispatch.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fleetnode_fixtures::postgres::{Cluster, ClusterOptions};
use fleetnode_wire::{DesiredChanged, HostAdded, decode, encode};
use hyper::{Method, StatusCode};
use rustls::pki_types::ServerName;
use tempfile::TempDir;
use tokio::task::JoinSet;

use super::Options;
use super::host::{Host, generation};
use super::link::{Endpoint, Link, LinkError};
use super::measure::Sample;
use crate::control_plane::ControlPlane;
use crate::{HarnessError, Result, binaries};

/// Operator connections used to register hosts at once.
const REGISTRATION_CONNECTIONS: usize = 16;

/// The running control planes (one, or several replicas on one database) and the operator's
/// means to drive each.
pub struct Server {
    replicas: Vec<ControlPlane>,
    operators: Vec<Operator>,
    /// The database cluster of a PostgreSQL store; dropped (stopped) after the servers.
    cluster: Option<Cluster>,
    root: PathBuf,
    _dir: Option<TempDir>,
}

/// The operator's side of a control plane: where it is and the admin token.
#[derive(Clone)]
pub struct Operator {
    endpoint: Endpoint,
    admin_token: String,
}

impl Server {
    /// Starts `fleetnode-cp serve` on a fresh store (`options.replicas` processes on one
    /// PostgreSQL database, or one on a redb file) with limits fit for the load: each host
    /// connects from its own address, so the per-source limit stays at its default.
    pub async fn start(options: &Options) -> Result<Self> {
        if options.replicas > 1 && !options.postgres {
            return Err(HarnessError::Setup {
                what: "the load generator's options".into(),
                message: "several replicas share a PostgreSQL store: add --postgres, or use --replicas 1 with redb".into(),
            });
        }
        let (dir, root) = match &options.work_dir {
            Some(path) => (None, path.clone()),
            None => {
                let dir = tempfile::tempdir().map_err(HarnessError::io("make a work directory"))?;
                let path = dir.path().to_owned();
                (Some(dir), path)
            }
        };
        std::fs::create_dir_all(&root)
            .map_err(HarnessError::io(format!("create {}", root.display())))?;
        let mut files = crate::harness::server_files(&root)?;
        let _ = std::fs::remove_file(&files.store);
        let cluster = if options.postgres {
            let (cluster, url) = tokio::task::block_in_place(durable_database)?;
            // `--store` takes the URL where it takes a path.
            files.store = PathBuf::from(url);
            Some(cluster)
        } else {
            None
        };
        let heartbeat = format!("{}s", options.heartbeat.as_secs().max(1));
        let binary = binaries::locate(binaries::CONTROL_PLANE)?;
        let mut replicas = Vec::with_capacity(options.replicas.max(1));
        // One after the other: the first applies the schema, the others find it in place.
        for index in 0..options.replicas.max(1) {
            let mut files = files.clone();
            files.log = root.join(format!("control-plane-{index}.log"));
            let started = tokio::task::block_in_place(|| {
                ControlPlane::start(binary.clone(), files, &heartbeat)
            })?;
            replicas.push(started);
        }
        let operators = replicas
            .iter()
            .map(Operator::of)
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            replicas,
            operators,
            cluster,
            root,
            _dir: dir,
        })
    }

    /// The directory of the server's files (and of a redb store).
    pub fn work_dir(&self) -> &Path {
        &self.root
    }

    /// The operator's side of the first replica.
    pub fn operator(&self) -> &Operator {
        &self.operators[0]
    }

    /// The operator's side of every replica, in the order started.
    pub fn operators(&self) -> &[Operator] {
        &self.operators
    }

    /// The replicas' URLs.
    pub fn urls(&self) -> Vec<String> {
        self.replicas.iter().map(ControlPlane::url).collect()
    }

    /// The replicas' process ids.
    pub fn pids(&self) -> Vec<u32> {
        self.replicas
            .iter()
            .map(|replica| replica.pid().unwrap_or(0))
            .collect()
    }

    /// A look at every replica, summed (memory and CPU of all of them together).
    pub fn sample(&self) -> Result<Sample> {
        let mut samples = Vec::with_capacity(self.replicas.len());
        for replica in &self.replicas {
            let pid = replica.pid().unwrap_or(0);
            samples.push(Sample::of(pid).ok_or_else(|| HarnessError::Setup {
                what: "a control plane under load".into(),
                message: format!("its process is gone; its log:\n{}", replica.log_tail(30)),
            })?);
        }
        Ok(Sample::sum(&samples))
    }

    /// A look at the database cluster's processes together (the postmaster, its live
    /// children, and the children it has reaped); `None` on a redb store.
    pub fn database_sample(&self) -> Option<Sample> {
        let cluster = self.cluster.as_ref()?;
        let data = cluster.socket_dir().join("data");
        Sample::of_tree(&data.display().to_string())
    }

    /// A look at this process.
    pub fn own_sample(&self) -> Result<Sample> {
        Sample::of(std::process::id()).ok_or_else(|| HarnessError::Setup {
            what: "the load generator".into(),
            message: "cannot read its own /proc entry".into(),
        })
    }

    /// Stops every replica (SIGTERM, as systemd does).
    pub fn stop(mut self) -> Result<()> {
        let mut result = Ok(());
        for replica in &mut self.replicas {
            if let Err(error) = replica.stop() {
                result = Err(error);
            }
        }
        result
    }
}

impl Operator {
    /// The operator of a running control plane (its port, CA and admin token files).
    pub fn of(control_plane: &ControlPlane) -> Result<Self> {
        let admin_token = std::fs::read_to_string(&control_plane.files().admin_token)
            .map_err(HarnessError::io("read the admin token"))?
            .trim()
            .to_owned();
        let tls = client_config(&control_plane.files().ca)?;
        let endpoint = Endpoint::new(
            SocketAddr::from(([127, 0, 0, 1], control_plane.port())),
            tls,
            ServerName::try_from("localhost").map_err(|e| setup_error("the server name", e))?,
        );
        Ok(Self {
            endpoint,
            admin_token,
        })
    }

    /// How hosts reach the server.
    pub fn endpoint(&self) -> Endpoint {
        self.endpoint.clone()
    }

    /// The admin token.
    pub fn token(&self) -> &str {
        &self.admin_token
    }

    /// A kept-alive operator connection from 127.0.0.1.
    pub async fn link(&self) -> Result<Link> {
        self.endpoint
            .connect(IpAddr::V4(Ipv4Addr::LOCALHOST))
            .await
            .map_err(|e| setup_error("the operator connection", e))
    }

    /// Registers `count` hosts named `<prefix>-<n>` and returns them.
    pub async fn register(&self, prefix: &str, count: usize) -> Result<Vec<Arc<Host>>> {
        let mut workers = JoinSet::new();
        for worker in 0..REGISTRATION_CONNECTIONS {
            let endpoint = self.endpoint.clone();
            let token = self.admin_token.clone();
            let prefix = prefix.to_owned();
            workers.spawn(async move {
                let mut link = endpoint.connect(IpAddr::V4(Ipv4Addr::LOCALHOST)).await?;
                let mut added = Vec::new();
                for index in (worker..count).step_by(REGISTRATION_CONNECTIONS) {
                    let id = format!("{prefix}-{index:05}");
                    let body = serde_json::json!({ "id": id, "tags": ["load"] }).to_string();
                    let answer = link
                        .request(
                            Method::POST,
                            "/v1/admin/hosts",
                            &token,
                            Some(body.into_bytes()),
                            false,
                        )
                        .await?;
                    let host: HostAdded = match answer.status {
                        StatusCode::CREATED => {
                            decode(&answer.body).map_err(|e| LinkError::Refused {
                                status: answer.status,
                                body: e.to_string(),
                            })?
                        }
                        status => {
                            return Err(LinkError::Refused {
                                status,
                                body: String::from_utf8_lossy(&answer.body).into_owned(),
                            });
                        }
                    };
                    added.push((index, id, host.token.expose().to_owned()));
                }
                Ok(added)
            });
        }
        let mut hosts = Vec::with_capacity(count);
        while let Some(done) = workers.join_next().await {
            let added = done
                .map_err(|e| setup_error("registering hosts", e))?
                .map_err(|e| setup_error("registering hosts", e))?;
            hosts.extend(added);
        }
        hosts.sort_by_key(|(index, _, _)| *index);
        Ok(hosts
            .into_iter()
            .map(|(index, id, token)| Arc::new(Host::new(index, id, token)))
            .collect())
    }

    /// Pauses (`paused`) or resumes one host through this replica, on `link` (a kept
    /// operator connection to it); returns the revision the change gave the host.
    pub async fn hold(&self, link: &mut Link, host: &str, paused: bool) -> Result<u64> {
        let action = if paused { "pause" } else { "resume" };
        let path = format!("/v1/admin/hosts/{host}/{action}");
        let answer = link
            .request(Method::POST, &path, &self.admin_token, None, false)
            .await
            .map_err(|e| setup_error(action, e))?;
        if answer.status != StatusCode::OK {
            return Err(setup_error(action, String::from_utf8_lossy(&answer.body)));
        }
        let changed: DesiredChanged =
            serde_json::from_slice(&answer.body).map_err(|e| setup_error(action, e))?;
        changed
            .hosts
            .first()
            .map(|changed| changed.revision.0)
            .ok_or_else(|| setup_error(action, format!("{host} did not change")))
    }

    /// `POST /v1/admin/targets` for every host; returns once the server answered.
    pub async fn set_target_for_all(&self, revision: u64) -> Result<DesiredChanged> {
        let mut link = self.link().await?;
        let body = encode(&serde_json::json!({
            "selector": { "by": "all" },
            "target": generation(revision),
        }));
        let answer = link
            .request(
                Method::POST,
                "/v1/admin/targets",
                &self.admin_token,
                Some(body),
                true,
            )
            .await
            .map_err(|e| setup_error("set-target for all", e))?;
        if answer.status != StatusCode::OK {
            return Err(setup_error(
                "set-target for all",
                String::from_utf8_lossy(&answer.body),
            ));
        }
        serde_json::from_slice(&answer.body).map_err(|e| setup_error("set-target's answer", e))
    }
}

fn client_config(ca: &std::path::Path) -> Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in fleetnode_tls::read_certs(ca).map_err(|e| setup_error("the CA file", e))? {
        roots
            .add(cert)
            .map_err(|e| setup_error("the CA certificate", e))?;
    }
    Ok(
        rustls::ClientConfig::builder_with_provider(fleetnode_tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| setup_error("TLS", e))?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

fn setup_error(what: &str, error: impl std::fmt::Display) -> HarnessError {
    HarnessError::Setup {
        what: what.to_owned(),
        message: error.to_string(),
    }
}

/// A throw-away PostgreSQL cluster (Debian's binaries, a Unix socket in a temporary directory)
/// with `fsync` and full-page writes on, as a production database has them, and an empty
/// database on it.
fn durable_database() -> Result<(Cluster, String)> {
    let fail = |e: fleetnode_fixtures::postgres::PgError| HarnessError::Setup {
        what: "the PostgreSQL cluster for the store".into(),
        message: e.to_string(),
    };
    let cluster = Cluster::start(&ClusterOptions {
        durable: true,
        ..ClusterOptions::default()
    })
    .map_err(fail)?;
    let url = cluster.database().map_err(fail)?.url();
    Ok((cluster, url))
}
