//! The `fleetnode-cp` command line: `serve` runs the server; every other command talks to a
//! running server's operator API with the admin token.

mod client;
mod commands;
mod operators;
mod render;
mod rollout;
mod rollout_view;
mod store;
pub(crate) mod time;
mod token_file;
mod watch;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use fleetnode_wire::{ActivationMode, FailurePolicy, HostId, Millis, StorePath, Tag};

pub use client::CliError;
pub use commands::run;

/// Default address of the control plane for client commands.
pub const DEFAULT_URL: &str = "https://127.0.0.1:8443";

/// The reference fleetnode control plane and its operator CLI.
#[derive(Debug, Parser)]
#[command(name = "fleetnode-cp", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the control plane server.
    Serve(ServeArgs),
    /// Register a host and print its bearer token (shown once).
    AddHost {
        /// The host's id (a DNS label, as the agent's host_id).
        #[arg(value_parser = parse_host)]
        id: HostId,
        /// A tag for selecting groups of hosts (repeatable).
        #[arg(long = "tag", value_parser = parse_tag)]
        tags: Vec<Tag>,
        /// Write the token to this file (mode 0600, must not exist) instead of printing it.
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// How to reach the server.
        #[command(flatten)]
        connection: Connection,
    },
    /// Revoke a host: its token stops working at once; its history is kept.
    RevokeHost {
        /// The host.
        #[arg(value_parser = parse_host)]
        id: HostId,
        /// How to reach the server.
        #[command(flatten)]
        connection: Connection,
    },
    /// List hosts (revoked hosts are left out), fetching the list page by page.
    Hosts {
        /// Hosts fetched per request (1 to 256).
        #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u16).range(1..=256))]
        page_size: u16,
        /// How to reach the server.
        #[command(flatten)]
        connection: Connection,
    },
    /// Show one host: mirrored state, desired state, heartbeat and recent events.
    Host {
        /// The host.
        #[arg(value_parser = parse_host)]
        id: HostId,
        /// How to reach the server.
        #[command(flatten)]
        connection: Connection,
    },
    /// Assign a system closure to hosts.
    SetTarget(SetTargetArgs),
    /// Ask a host to go back to a known-good generation.
    Rollback {
        /// The host.
        #[arg(value_parser = parse_host)]
        id: HostId,
        /// The generation to go back to; by default the host undoes its latest deployment.
        #[arg(long, value_parser = parse_store_path)]
        to: Option<StorePath>,
        /// How to reach the server.
        #[command(flatten)]
        connection: Connection,
    },
    /// Put a host on hold: directives are recorded but nothing new starts.
    Pause {
        /// The host.
        #[arg(value_parser = parse_host)]
        id: HostId,
        /// How to reach the server.
        #[command(flatten)]
        connection: Connection,
    },
    /// Lift a host's hold.
    Resume {
        /// The host.
        #[arg(value_parser = parse_host)]
        id: HostId,
        /// How to reach the server.
        #[command(flatten)]
        connection: Connection,
    },
    /// Operators and the audit log.
    #[command(flatten)]
    Operators(operators::OperatorCommand),
    /// Roll a release out over the fleet in waves, and follow or steer rollouts.
    Rollout {
        /// What to do.
        #[command(subcommand)]
        command: rollout::RolloutCommand,
    },
    /// Work on a store directly (no server running on it): copy a redb store to PostgreSQL.
    Store {
        /// What to do.
        #[command(subcommand)]
        command: store::StoreCommand,
    },
}

/// Options of `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address and port to listen on.
    #[arg(long, default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// Server certificate chain (PEM).
    #[arg(long, required_unless_present = "insecure_http")]
    pub tls_cert: Option<PathBuf>,
    /// Server private key (PEM).
    #[arg(long, required_unless_present = "insecure_http")]
    pub tls_key: Option<PathBuf>,
    /// Mutual TLS: agents must present a client certificate signed by this CA (PEM) whose DNS
    /// name is their host id. The certificate alone authenticates; a token sent along must
    /// still be the host's own.
    #[arg(long)]
    pub client_ca: Option<PathBuf>,
    /// File holding the operator's admin token.
    #[arg(long)]
    pub admin_token_file: PathBuf,
    /// The store: a redb file (created when missing), or a PostgreSQL database as a
    /// `postgres://` or `postgresql://` URL, which any number of replicas may share
    /// (docs/control-plane.md, "Running several replicas"). Keep a password out of the URL:
    /// give --store-password-file, or use PGPASSFILE.
    #[arg(long, default_value = "./fleetnode-cp.redb")]
    pub store: String,
    /// File holding the database password (mode 0600), for a PostgreSQL store.
    #[arg(long)]
    pub store_password_file: Option<PathBuf>,
    /// With replicas on PostgreSQL: how long the rollout driver's lease lasts unless renewed,
    /// so how soon another replica takes the rollouts over when the driving one dies.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub lease_ttl: Millis,
    /// How long a session of the operator's web console (/console/) lasts after sign-in;
    /// signing out, or revoking the operator, ends it sooner.
    #[arg(long, default_value = "8h", value_parser = parse_duration)]
    pub console_session_lifetime: Millis,
    /// TOML file of maintenance windows per host tag (`[windows]` then `web = ["Sat
    /// 02:00-04:00 Europe/Berlin"]`): a rollout switches a host only inside one of its tags'
    /// windows; a host whose tags have none is always open. Read at start.
    #[arg(long, value_name = "FILE")]
    pub maintenance_windows: Option<PathBuf>,
    /// Serve plain HTTP instead of TLS; only allowed on a loopback address. For demos.
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key", "client_ca"])]
    pub insecure_http: bool,
    /// Heartbeat interval of the agents; a host is offline after three without a heartbeat.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub heartbeat_interval: Millis,
    /// Serve /metrics without the admin token (e.g. to a scraper on a private network).
    #[arg(long)]
    pub metrics_public: bool,
    /// Long-polls one host may have waiting at once.
    #[arg(long, default_value_t = crate::server::DEFAULT_WAITERS_PER_HOST)]
    pub waiters_per_host: usize,
    /// Connections one source address may hold at once; more are answered 429 and closed.
    /// Raise it when many hosts reach the server through one address (a NAT gateway).
    #[arg(long, default_value_t = crate::server::listen::DEFAULT_CONNECTIONS_PER_SOURCE)]
    pub max_connections_per_source: usize,
    /// Connections the server holds at once (beyond, it stops accepting until one closes);
    /// by default the open-file limit less a reserve for the store and logs.
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// A load balancer (an address, or a network such as 10.0.0.0/24; repeatable) whose
    /// connections begin with a PROXY protocol v2 header naming the client (HAProxy:
    /// `send-proxy-v2`). The header is required from these addresses and never read from any
    /// other; the client it names is the one the per-source limit and the logs use.
    #[arg(long = "trusted-proxy", value_name = "IP or CIDR")]
    pub trusted_proxies: Vec<crate::server::listen::TrustedNet>,
    /// What the store keeps.
    #[command(flatten)]
    pub retention: RetentionArgs,
}

/// Options of `serve` that say what the store keeps (docs/control-plane.md, "Retention").
#[derive(Debug, Args)]
pub struct RetentionArgs {
    /// Events older than this are pruned (e.g. 90d), except each host's newest events and
    /// those of recent rollouts; `forever` keeps them all.
    #[arg(long, default_value = "90d", value_parser = parse_age)]
    pub retain_events: Age,
    /// Entries of each host's desired-state history kept beyond the state in force; `all`
    /// keeps them all.
    #[arg(long, default_value = "100", value_parser = parse_depth)]
    pub retain_desired_history: Depth,
    /// Audit entries older than this are pruned (e.g. 365d); `forever` keeps them all.
    /// Compliance regimes often ask for several years.
    #[arg(long, default_value = "365d", value_parser = parse_age)]
    pub retain_audit: Age,
    /// Time between retention passes.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub retention_interval: Millis,
    /// Log and count what retention would prune, and prune nothing.
    #[arg(long)]
    pub retention_dry_run: bool,
}

/// An age limit, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Age(pub Option<Millis>);

/// A depth limit, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Depth(pub Option<u64>);

/// `--retain-events`, `--retain-audit`: a duration, or `forever`.
pub fn parse_age(text: &str) -> Result<Age, String> {
    if text == "forever" {
        return Ok(Age(None));
    }
    let age = Millis::parse(text).map_err(|e| format!("{e}, or `forever`"))?;
    if age.0 == 0 {
        return Err(
            "an age of 0 would prune everything at once; give a duration such as 90d, or `forever`"
                .to_owned(),
        );
    }
    Ok(Age(Some(age)))
}

/// `--retain-desired-history`: a count, or `all`.
pub fn parse_depth(text: &str) -> Result<Depth, String> {
    if text == "all" {
        return Ok(Depth(None));
    }
    match text.parse::<u64>() {
        Ok(depth) => Ok(Depth(Some(depth))),
        Err(_) => Err(format!(
            "{text:?} is not a count of entries; give a number such as 100, or `all`"
        )),
    }
}

/// Options of `set-target`.
#[derive(Debug, Args)]
pub struct SetTargetArgs {
    /// The system closure (a /nix/store path).
    #[arg(value_parser = parse_store_path)]
    pub closure: StorePath,
    /// Which hosts.
    #[command(flatten)]
    pub selection: Selection,
    /// How to activate it; each host's default when absent.
    #[arg(long, value_enum)]
    pub mode: Option<ModeArg>,
    /// How long the new generation must stay healthy (e.g. 5m).
    #[arg(long, value_parser = parse_duration)]
    pub soak: Option<Millis>,
    /// How long an enforce probe may fail without a break before the soak fails (e.g. 1m).
    #[arg(long, value_parser = parse_duration)]
    pub sustained_failure: Option<Millis>,
    /// What to do when activation or health fails.
    #[arg(long, value_enum)]
    pub on_failure: Option<OnFailureArg>,
    /// Set the target even on hosts a running rollout owns, taking them out of it.
    #[arg(long)]
    pub force: bool,
    /// How to reach the server.
    #[command(flatten)]
    pub connection: Connection,
}

/// Which hosts `set-target` applies to.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct Selection {
    /// These hosts (repeatable).
    #[arg(long = "host", value_parser = parse_host)]
    pub hosts: Vec<HostId>,
    /// Every active host with this tag.
    #[arg(long, value_parser = parse_tag)]
    pub tag: Option<Tag>,
    /// Every active host.
    #[arg(long)]
    pub all: bool,
}

/// `--mode`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ModeArg {
    /// Activate live, soak, and commit only when healthy.
    TestThenCommit,
    /// Set the boot entry and activate live, then soak.
    Switch,
    /// Set the boot entry only; health is judged after the next boot.
    Boot,
}

/// `--on-failure`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OnFailureArg {
    /// Roll back to the last known-good generation.
    Rollback,
    /// Stop and leave the host as it is.
    Halt,
}

impl From<ModeArg> for ActivationMode {
    fn from(mode: ModeArg) -> Self {
        match mode {
            ModeArg::TestThenCommit => Self::TestThenCommit,
            ModeArg::Switch => Self::Switch,
            ModeArg::Boot => Self::Boot,
        }
    }
}

impl From<OnFailureArg> for FailurePolicy {
    fn from(policy: OnFailureArg) -> Self {
        match policy {
            OnFailureArg::Rollback => Self::Rollback,
            OnFailureArg::Halt => Self::Halt,
        }
    }
}

/// How client commands reach the server.
#[derive(Debug, Clone, Args)]
pub struct Connection {
    /// The control plane's URL.
    #[arg(long, env = "FLEETNODE_CP_URL", default_value = DEFAULT_URL)]
    pub url: String,
    /// File holding the admin token.
    #[arg(long, env = "FLEETNODE_ADMIN_TOKEN_FILE")]
    pub admin_token_file: PathBuf,
    /// CA certificate (PEM) to verify the server with, instead of the system's CA bundle.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Print the API's JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

fn parse_host(text: &str) -> Result<HostId, String> {
    HostId::parse(text).map_err(|e| e.to_string())
}

fn parse_tag(text: &str) -> Result<Tag, String> {
    Tag::parse(text).map_err(|e| e.to_string())
}

fn parse_store_path(text: &str) -> Result<StorePath, String> {
    StorePath::parse(text).map_err(|e| e.to_string())
}

/// Parses `500ms`, `30s`, `5m`, `2h` or `1d` (a bare number means seconds).
pub fn parse_duration(text: &str) -> Result<Millis, String> {
    Millis::parse(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_limits_take_a_keyword_for_none() {
        assert_eq!(parse_age("forever"), Ok(Age(None)));
        assert_eq!(parse_age("90d"), Ok(Age(Some(Millis(90 * 86_400_000)))));
        assert!(parse_age("0s").unwrap_err().contains("forever"));
        assert!(parse_age("never").unwrap_err().contains("forever"));
        assert_eq!(parse_depth("all"), Ok(Depth(None)));
        assert_eq!(parse_depth("0"), Ok(Depth(Some(0))));
        assert!(parse_depth("-1").unwrap_err().contains("`all`"));
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("500ms"), Ok(Millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Millis(30_000)));
        assert_eq!(parse_duration("30"), Ok(Millis(30_000)));
        assert_eq!(parse_duration("5m"), Ok(Millis(300_000)));
        assert_eq!(parse_duration("2h"), Ok(Millis(7_200_000)));
        assert!(parse_duration("5 minutes").is_err());
        assert!(parse_duration("m").is_err());
    }

    #[test]
    fn set_target_needs_exactly_one_selection() {
        let closure = "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-a";
        let base = [
            "fleetnode-cp",
            "set-target",
            closure,
            "--admin-token-file",
            "/t",
        ];
        assert!(Cli::try_parse_from(base).is_err());
        let mut with_host = base.to_vec();
        with_host.extend(["--host", "a", "--host", "b"]);
        assert!(Cli::try_parse_from(&with_host).is_ok());
        let mut both = base.to_vec();
        both.extend(["--host", "a", "--all"]);
        assert!(Cli::try_parse_from(&both).is_err());
    }
}
