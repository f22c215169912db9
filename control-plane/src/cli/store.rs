//! `fleetnode-cp store ...`: work on a store directly, with no server running on it.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::fleet::StoreLocation;
use crate::store::StoreCounts;
use crate::store::copy::{CopySummary, copy_to_postgres};

/// The `store` subcommands.
#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Copy a redb store into an empty PostgreSQL database (moving a fleet to replicas): every
    /// host with its token digest, desired states and their history, every event, mirrors,
    /// heartbeats, operators, rollouts and the audit log. The copy is checked (every count,
    /// every host's mirror, desired state and heartbeat) before it commits; a database that
    /// already holds a fleet is refused. Stop the server on the redb file first.
    Copy(CopyArgs),
}

/// Options of `store copy`.
#[derive(Debug, Args)]
pub struct CopyArgs {
    /// The redb file to copy (the stopped server's --store).
    #[arg(long)]
    pub from: PathBuf,
    /// The database, as a `postgres://` or `postgresql://` URL; its schema is created first.
    /// Keep a password out of the URL: give --to-password-file, or use PGPASSFILE.
    #[arg(long)]
    pub to: String,
    /// File holding the database password (mode 0600).
    #[arg(long)]
    pub to_password_file: Option<PathBuf>,
}

/// Runs a `store` subcommand.
pub async fn run(command: StoreCommand) -> anyhow::Result<()> {
    match command {
        StoreCommand::Copy(args) => copy(args).await,
    }
}

async fn copy(args: CopyArgs) -> anyhow::Result<()> {
    let StoreLocation::Postgres(options) = StoreLocation::parse(&args.to, args.to_password_file)
    else {
        anyhow::bail!(
            "--to {:?} is not a PostgreSQL URL; give postgres://user@host/dbname (or postgres:///dbname?host=/run/postgresql for a Unix socket)",
            args.to
        );
    };
    let summary = copy_to_postgres(&args.from, &options).await?;
    print!("{}", render(&args.from, &summary));
    Ok(())
}

/// The summary printed after a copy.
fn render(from: &std::path::Path, summary: &CopySummary) -> String {
    let StoreCounts {
        hosts,
        desired_history,
        events,
        heartbeats,
        operators,
        rollouts,
        audit,
    } = summary.counts;
    format!(
        "copied {} into {} (schema migrations applied: {})\n\
         hosts                   {hosts}\n\
         desired-state history   {desired_history}\n\
         events                  {events}\n\
         heartbeats              {heartbeats}\n\
         operators               {operators}\n\
         rollouts                {rollouts}\n\
         audit entries           {audit}\n\
         checked: every count equal on both sides; every host's registration, desired state, mirror and heartbeat equal\n",
        from.display(),
        summary.target,
        summary.migrations_applied,
    )
}
