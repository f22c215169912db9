//! `add-operator`, `revoke-operator`, `operators` and `audit`: who may act on the fleet, and
//! what each of them did.

use std::fmt::Write as _;
use std::path::PathBuf;

use clap::Subcommand;
use fleetnode_wire::{
    AddOperator, AuditLog, HostId, Millis, OperatorAdded, OperatorList, OperatorName, Timestamp,
};
use reqwest::Method;

use super::client::{CliError, Client};
use super::token_file::created_around;
use super::{Connection, parse_host};
use crate::clock::{Clock, SystemClock};

/// The commands about operators and the audit log.
#[derive(Debug, Subcommand)]
pub enum OperatorCommand {
    /// Name an operator and print their own token (shown once); every action taken with it is
    /// recorded under that name. Needs the admin token.
    AddOperator {
        /// The operator's name (a DNS label, such as `alice` or `ci-deploy`).
        #[arg(value_parser = parse_operator)]
        name: OperatorName,
        /// Write the token to this file (mode 0600, must not exist) instead of printing it.
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// How to reach the server.
        #[command(flatten)]
        connection: Connection,
    },
    /// Revoke an operator: their token stops working at once; their audit entries stay.
    /// Needs the admin token.
    RevokeOperator {
        /// The operator.
        #[arg(value_parser = parse_operator)]
        name: OperatorName,
        /// How to reach the server.
        #[command(flatten)]
        connection: Connection,
    },
    /// List the operators, revoked ones included.
    Operators {
        /// How to reach the server.
        #[command(flatten)]
        connection: Connection,
    },
    /// Show the audit log: who did what to which hosts, when, and how it ended.
    Audit {
        /// Only actions that named or changed this host.
        #[arg(long, value_parser = parse_host)]
        host: Option<HostId>,
        /// Only actions since then: a duration back from now (`30m`, `2h`, `7d`) or a UTC
        /// time (`2026-12-01`, `2026-12-01 13:05:00`).
        #[arg(long, value_parser = parse_since)]
        since: Option<Since>,
        /// How to reach the server.
        #[command(flatten)]
        connection: Connection,
    },
}

/// Where `--since` starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    /// This long before now.
    Ago(Millis),
    /// This time.
    At(Timestamp),
}

impl Since {
    fn at(self, now: Timestamp) -> Timestamp {
        match self {
            Self::Ago(span) => Timestamp(now.0.saturating_sub(span.0)),
            Self::At(at) => at,
        }
    }
}

/// Runs one of the commands.
pub async fn run(command: OperatorCommand) -> Result<(), CliError> {
    match command {
        OperatorCommand::AddOperator {
            name,
            token_file,
            connection,
        } => add(name, token_file, &connection).await,
        OperatorCommand::RevokeOperator { name, connection } => {
            let client = Client::new(&connection)?;
            client
                .send(Method::DELETE, &format!("/v1/admin/operators/{name}"), None)
                .await?;
            if !connection.json {
                println!("{name}: revoked; their token no longer works (audit entries kept)");
            }
            Ok(())
        }
        OperatorCommand::Operators { connection } => {
            let client = Client::new(&connection)?;
            let list: OperatorList = client
                .call(Method::GET, "/v1/admin/operators", None)
                .await?;
            print_json_or(&connection, &list, || operator_table(&list));
            Ok(())
        }
        OperatorCommand::Audit {
            host,
            since,
            connection,
        } => {
            let mut path = "/v1/admin/audit".to_owned();
            let mut query = Vec::new();
            if let Some(host) = host {
                query.push(format!("host={host}"));
            }
            if let Some(since) = since {
                query.push(format!("since={}", since.at(SystemClock.now()).0));
            }
            if !query.is_empty() {
                path = format!("{path}?{}", query.join("&"));
            }
            let client = Client::new(&connection)?;
            let log: AuditLog = client.call(Method::GET, &path, None).await?;
            print_json_or(&connection, &log, || audit_table(&log));
            Ok(())
        }
    }
}

async fn add(
    name: OperatorName,
    token_file: Option<PathBuf>,
    connection: &Connection,
) -> Result<(), CliError> {
    let client = Client::new(connection)?;
    let body = fleetnode_wire::encode(&AddOperator { name });
    let (added, file): (OperatorAdded, _) = created_around(
        token_file.as_deref(),
        client.call(Method::POST, "/v1/admin/operators", Some(body)),
    )
    .await?;
    match file {
        Some(file) => {
            let path = file.write(added.token.expose(), || {
                format!(
                    "operator {} was added but the token could not be written; revoke-operator them and add them again",
                    added.name
                )
            })?;
            if connection.json {
                let shown = serde_json::json!({ "name": added.name, "token_file": path });
                println!("{}", super::commands::json(&shown));
            } else {
                println!("{}: added; token written to {}", added.name, path.display());
            }
        }
        None if connection.json => println!("{}", super::commands::json(&added)),
        None => {
            println!("{}: added. Their token, shown only this once:", added.name);
            println!("{}", added.token.expose());
            println!(
                "Give it to them to keep in a file only they can read, passed as --admin-token-file."
            );
        }
    }
    Ok(())
}

fn print_json_or<T: serde::Serialize>(
    connection: &Connection,
    value: &T,
    text: impl FnOnce() -> String,
) {
    if connection.json {
        println!("{}", super::commands::json(value));
    } else {
        print!("{}", text());
    }
}

fn operator_table(list: &OperatorList) -> String {
    let mut out = format!(
        "{:<24} {:<21} {:<16} {}\n",
        "NAME", "ADDED", "BY", "REVOKED"
    );
    for row in &list.operators {
        let revoked = row
            .revoked_at
            .map_or_else(|| "-".to_owned(), |at| at.to_string());
        let _ = writeln!(
            out,
            "{:<24} {:<21} {:<16} {revoked}",
            row.name,
            row.added_at.to_string(),
            row.added_by
        );
    }
    out
}

/// The audit log as a table, oldest first.
pub fn audit_table(log: &AuditLog) -> String {
    let mut out = String::new();
    if log.truncated {
        out.push_str("(older entries left out; narrow with --host or --since)\n");
    }
    let _ = writeln!(
        out,
        "{:<6} {:<21} {:<16} {:<18} {:<24} ON",
        "SEQ", "AT", "WHO", "ACTION", "OUTCOME"
    );
    for entry in &log.entries {
        let mut on: Vec<String> = entry.subject.iter().cloned().collect();
        on.extend(entry.hosts.iter().map(ToString::to_string));
        let outcome = format!("{} ({})", entry.outcome, entry.status);
        let on = if on.is_empty() {
            "-".to_owned()
        } else {
            on.join(", ")
        };
        let _ = writeln!(
            out,
            "{:<6} {:<21} {:<16} {:<18} {outcome:<24} {on}",
            entry.seq,
            entry.at.to_string(),
            entry.who,
            entry.action
        );
    }
    out
}

fn parse_operator(text: &str) -> Result<OperatorName, String> {
    OperatorName::parse(text).map_err(|e| e.to_string())
}

/// `--since`: a duration back from now, or a UTC date with an optional time.
pub fn parse_since(text: &str) -> Result<Since, String> {
    if let Ok(span) = Millis::parse(text) {
        return Ok(Since::Ago(span));
    }
    parse_utc(text).map(Since::At).ok_or_else(|| {
        format!(
            "{text:?} is neither a duration (30m, 2h, 7d) nor a UTC time (2026-12-01 or 2026-12-01 13:05:00)"
        )
    })
}

/// `YYYY-MM-DD`, optionally followed by ` HH:MM[:SS]` or `THH:MM[:SS]`, and an optional `Z`.
fn parse_utc(text: &str) -> Option<Timestamp> {
    let text = text.trim().trim_end_matches('Z');
    let (date, time) = match text.split_once([' ', 'T']) {
        Some((date, time)) => (date, Some(time)),
        None => (text, None),
    };
    let mut parts = date.split('-');
    let (year, month, day): (i64, u32, u32) = (
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
    );
    if parts.next().is_some() || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let mut seconds = 0u64;
    if let Some(time) = time {
        let fields: Vec<u64> = time
            .split(':')
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        let (hour, minute, second) = match fields.as_slice() {
            [h, m] => (*h, *m, 0),
            [h, m, s] => (*h, *m, *s),
            _ => return None,
        };
        if hour > 23 || minute > 59 || second > 59 {
            return None;
        }
        seconds = hour * 3600 + minute * 60 + second;
    }
    let days = u64::try_from(days_from_civil(year, month, day)).ok()?;
    Some(Timestamp((days * 86_400 + seconds) * 1000))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days-from-civil).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let month = i64::from(month);
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_durations_and_utc_times() {
        assert_eq!(parse_since("2h"), Ok(Since::Ago(Millis::from_secs(7200))));
        let at = |text| match parse_since(text) {
            Ok(Since::At(at)) => at.to_string(),
            other => panic!("{text}: {other:?}"),
        };
        assert_eq!(at("2026-12-01"), "2026-12-01 00:00:00Z");
        assert_eq!(at("2026-12-01 13:05:09Z"), "2026-12-01 13:05:09Z");
        assert_eq!(at("2024-02-29T23:59"), "2024-02-29 23:59:00Z");
        assert_eq!(at("1970-01-01"), "1970-01-01 00:00:00Z");
        for bad in ["yesterday", "2026-13-01", "2026-12-01 25:00", "2026-12"] {
            assert!(parse_since(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Since::Ago(Millis::from_secs(60)).at(Timestamp(100_000)),
            Timestamp(40_000)
        );
    }
}
