//! `fleetnode-cp rollout …`: start a rollout of a release manifest, follow it, list rollouts,
//! pause, resume, abort or roll one back.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};
use fleetnode_wire::{
    ApprovalPolicy, DEFAULT_BAKE, DEFAULT_OFFLINE_DEADLINE, FailureBudget, Millis, OnHalt,
    ReleaseManifest, RolloutId, RolloutList, RolloutStatus, StartRollout, Validate, WaveSpec,
};
use reqwest::Method;

use super::client::{CliError, Client};
use super::{Connection, parse_duration, rollout_view, watch};
use crate::clock::{Clock, SystemClock};

/// The `rollout` subcommands.
#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Start rolling a release out in waves.
    Start(StartArgs),
    /// Show a rollout: its waves, every host, the failure budget (the newest rollout by default).
    Status {
        /// The rollout's number.
        #[arg(value_parser = parse_id)]
        id: Option<RolloutId>,
        /// Keep showing it, redrawn in place on a terminal, until nothing it started still
        /// moves; exits non-zero unless it completed with every host converged.
        #[arg(long)]
        watch: bool,
        /// How to reach the server.
        #[command(flatten)]
        connection: Connection,
    },
    /// List the rollouts, newest first.
    List {
        /// How to reach the server.
        #[command(flatten)]
        connection: Connection,
    },
    /// Hold a rollout: no new wave starts; hosts already given the release carry on.
    Pause(OneRollout),
    /// Lift a rollout's hold.
    Resume(OneRollout),
    /// Stop a rollout where it is: no further host gets the release.
    Abort(OneRollout),
    /// Stop a rollout and send every host it moved back to the generation it ran before.
    Rollback(OneRollout),
    /// Let the wave a rollout waits on start (rollouts started with `--require-approval`).
    Approve(OneRollout),
}

/// A command on one rollout.
#[derive(Debug, Args)]
pub struct OneRollout {
    /// The rollout's number.
    #[arg(value_parser = parse_id)]
    pub id: RolloutId,
    /// How to reach the server.
    #[command(flatten)]
    pub connection: Connection,
}

/// Options of `rollout start`.
#[derive(Debug, Args)]
pub struct StartArgs {
    /// The release manifest: JSON `{"hosts": {"<host>": "/nix/store/…"}}` or Cachix Deploy's
    /// `deploy.json` (`{"agents": {…}}`); `-` reads it from standard input.
    pub manifest: PathBuf,
    /// The waves, in order: host counts (`1`), shares (`10%`) or tags (`tag:canary`), each
    /// cumulative; the last must cover every host [default: 1,10%,100%].
    #[arg(long, value_parser = parse_waves)]
    pub waves: Option<Waves>,
    /// How long each wave must stay good after it converged before the next starts
    /// [default: 10m].
    #[arg(long, value_parser = parse_duration)]
    pub bake: Option<Millis>,
    /// Failed hosts tolerated, a number (`2`) or a share of the release (`10%`); one more
    /// halts the rollout [default: 0].
    #[arg(long, value_parser = FailureBudget::parse)]
    pub max_failures: Option<FailureBudget>,
    /// What a halt does with the hosts the rollout already moved [default: stop].
    #[arg(long, value_enum)]
    pub on_halt: Option<OnHaltArg>,
    /// How long a host of the current wave may go without a heartbeat before it counts as
    /// failed [default: 10m].
    #[arg(long, value_parser = parse_duration)]
    pub offline_deadline: Option<Millis>,
    /// `always`: every wave, the first included, waits for `rollout approve ID` before it
    /// starts [default: never].
    #[arg(long, value_parser = ApprovalPolicy::parse, value_name = "always|never")]
    pub require_approval: Option<ApprovalPolicy>,
    /// Follow the rollout after starting it, as `rollout status --watch` does.
    #[arg(long)]
    pub watch: bool,
    /// How to reach the server.
    #[command(flatten)]
    pub connection: Connection,
}

/// `--waves`.
#[derive(Debug, Clone)]
pub struct Waves(pub Vec<WaveSpec>);

fn parse_id(text: &str) -> Result<RolloutId, String> {
    text.parse::<u64>().map(RolloutId).map_err(|_| {
        format!("{text:?} is not a rollout number; `fleetnode-cp rollout list` lists them")
    })
}

fn parse_waves(text: &str) -> Result<Waves, String> {
    WaveSpec::parse_list(text).map(Waves)
}

/// `--on-halt`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OnHaltArg {
    /// Leave the hosts as they are.
    Stop,
    /// Send each host the rollout moved back to what it ran before.
    Rollback,
}

impl From<OnHaltArg> for OnHalt {
    fn from(value: OnHaltArg) -> Self {
        match value {
            OnHaltArg::Stop => Self::Stop,
            OnHaltArg::Rollback => Self::Rollback,
        }
    }
}

/// Runs a `rollout` subcommand.
pub async fn run(command: RolloutCommand) -> Result<(), CliError> {
    match command {
        RolloutCommand::Start(args) => start(args).await,
        RolloutCommand::Status {
            id,
            watch: follow,
            connection,
        } => {
            let client = Client::new(&connection)?;
            let id = match id {
                Some(id) => id,
                None => newest(&client).await?,
            };
            if follow {
                return watch::follow(&client, id, connection.json).await;
            }
            let status: RolloutStatus = client.call(Method::GET, &path(id, ""), None).await?;
            show(&connection, &status);
            Ok(())
        }
        RolloutCommand::List { connection } => {
            let client = Client::new(&connection)?;
            let list: RolloutList = client.call(Method::GET, "/v1/admin/rollouts", None).await?;
            if connection.json {
                println!("{}", json(&list));
            } else {
                print!("{}", rollout_view::list(&list, SystemClock.now()));
            }
            Ok(())
        }
        RolloutCommand::Pause(one) => act(one, "/pause").await,
        RolloutCommand::Resume(one) => act(one, "/resume").await,
        RolloutCommand::Abort(one) => act(one, "/abort").await,
        RolloutCommand::Rollback(one) => act(one, "/rollback").await,
        RolloutCommand::Approve(one) => act(one, "/approve").await,
    }
}

async fn start(args: StartArgs) -> Result<(), CliError> {
    let release = read_manifest(&args.manifest)?;
    let request = StartRollout {
        release,
        waves: args.waves.map_or_else(WaveSpec::defaults, |w| w.0),
        bake_ms: args.bake.unwrap_or(DEFAULT_BAKE),
        max_failures: args.max_failures.unwrap_or_default(),
        on_halt: args.on_halt.map(Into::into).unwrap_or_default(),
        offline_deadline_ms: args.offline_deadline.unwrap_or(DEFAULT_OFFLINE_DEADLINE),
        require_approval: args.require_approval.unwrap_or_default(),
    };
    request
        .validate()
        .map_err(|e| CliError::Usage(format!("cannot start this rollout: {e}")))?;
    let client = Client::new(&args.connection)?;
    let status: RolloutStatus = client
        .call(
            Method::POST,
            "/v1/admin/rollouts",
            Some(fleetnode_wire::encode(&request)),
        )
        .await?;
    if args.watch {
        return watch::follow(&client, status.rollout.id, args.connection.json).await;
    }
    show(&args.connection, &status);
    Ok(())
}

async fn act(one: OneRollout, what: &str) -> Result<(), CliError> {
    let client = Client::new(&one.connection)?;
    let status: RolloutStatus = client.call(Method::POST, &path(one.id, what), None).await?;
    show(&one.connection, &status);
    Ok(())
}

/// The newest rollout's number.
async fn newest(client: &Client) -> Result<RolloutId, CliError> {
    let list: RolloutList = client.call(Method::GET, "/v1/admin/rollouts", None).await?;
    list.rollouts.first().map(|r| r.id).ok_or_else(|| {
        CliError::Usage(
            "there are no rollouts yet; start one with `fleetnode-cp rollout start MANIFEST`"
                .to_owned(),
        )
    })
}

/// Reads and checks a release manifest (a file, or standard input for `-`).
pub fn read_manifest(file: &Path) -> Result<ReleaseManifest, CliError> {
    let text = if file == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map(|_| text)
            .map_err(|e| format!("cannot read the release manifest from standard input: {e}"))
    } else {
        std::fs::read_to_string(file)
            .map_err(|e| format!("cannot read the release manifest {}: {e}", file.display()))
    }
    .map_err(CliError::Usage)?;
    let name = if file == Path::new("-") {
        "on standard input".to_owned()
    } else {
        file.display().to_string()
    };
    crate::rollout::parse_manifest(&text, &name).map_err(|e| CliError::Usage(e.to_string()))
}

/// The API path of a rollout, with `suffix`.
pub fn path(id: RolloutId, suffix: &str) -> String {
    format!("/v1/admin/rollouts/{id}{suffix}")
}

fn show(connection: &Connection, status: &RolloutStatus) {
    if connection.json {
        println!("{}", json(status));
    } else {
        print!("{}", rollout_view::status(status, SystemClock.now()));
    }
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}
