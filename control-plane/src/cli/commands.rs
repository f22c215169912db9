//! Running a parsed command.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use fleetnode_wire::{
    AddHost, DesiredChanged, HealthOverrides, HostAdded, HostDetail, HostId, HostList, Millis,
    RollbackRequest, Secret, Selector, SetTarget,
};
use reqwest::Method;
use tracing::info;

use super::client::{CliError, Client};
use super::token_file::created_around;
use super::{Cli, Command, Connection, ServeArgs, SetTargetArgs, render};
use crate::clock::{Clock, SystemClock};
use crate::fleet::{Retention, StoreLocation};
use crate::rollout::window::TagWindows;
use crate::server::{ServeError, ServerOptions, Transport, TrustedProxies, start};

/// Runs a command; the error is what to print before exiting non-zero.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::AddHost {
            id,
            tags,
            token_file,
            connection,
        } => Ok(add_host(id, tags, token_file.as_deref(), &connection).await?),
        Command::RevokeHost { id, connection } => {
            let client = Client::new(&connection)?;
            client
                .send(Method::DELETE, &format!("/v1/admin/hosts/{id}"), None)
                .await?;
            if !connection.json {
                println!("{id}: revoked; its token no longer works (history kept)");
            }
            Ok(())
        }
        Command::Hosts {
            page_size,
            connection,
        } => {
            let client = Client::new(&connection)?;
            let list = every_host(&client, page_size).await?;
            print_json_or(&connection, &list, || {
                render::host_table(&list, SystemClock.now())
            });
            Ok(())
        }
        Command::Host { id, connection } => {
            let client = Client::new(&connection)?;
            let detail: HostDetail = client
                .call(Method::GET, &format!("/v1/admin/hosts/{id}"), None)
                .await?;
            print_json_or(&connection, &detail, || {
                render::host_detail(&detail, SystemClock.now())
            });
            Ok(())
        }
        Command::SetTarget(args) => Ok(set_target(args).await?),
        Command::Rollback { id, to, connection } => {
            let body = fleetnode_wire::encode(&RollbackRequest { to });
            change(
                &connection,
                &format!("/v1/admin/hosts/{id}/rollback"),
                Some(body),
                "rollback requested",
            )
            .await
        }
        Command::Pause { id, connection } => {
            change(
                &connection,
                &format!("/v1/admin/hosts/{id}/pause"),
                None,
                "paused",
            )
            .await
        }
        Command::Resume { id, connection } => {
            change(
                &connection,
                &format!("/v1/admin/hosts/{id}/resume"),
                None,
                "resumed",
            )
            .await
        }
        Command::Operators(command) => Ok(super::operators::run(command).await?),
        Command::Rollout { command } => Ok(super::rollout::run(command).await?),
        Command::Store { command } => super::store::run(command).await,
    }
}

/// Every host, following the list's pages; printed as one list.
async fn every_host(client: &Client, page_size: u16) -> Result<HostList, CliError> {
    let mut hosts = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(cursor) => format!(
                "/v1/admin/hosts?limit={page_size}&cursor={}",
                query_escape(cursor)
            ),
            None => format!("/v1/admin/hosts?limit={page_size}"),
        };
        let page: HostList = client.call(Method::GET, &path, None).await?;
        hosts.extend(page.hosts);
        match page.next_cursor {
            // A cursor that does not move on would loop forever; the server never sends one.
            Some(next) if cursor.as_ref() != Some(&next) => cursor = Some(next),
            Some(_) | None => break,
        }
    }
    Ok(HostList {
        hosts,
        next_cursor: None,
    })
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn query_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let token_text = std::fs::read_to_string(&args.admin_token_file).map_err(|e| {
        anyhow::anyhow!(
            "cannot read the admin token file {}: {e}",
            args.admin_token_file.display()
        )
    })?;
    let transport = if args.insecure_http {
        Transport::InsecureHttp
    } else {
        match (args.tls_cert, args.tls_key) {
            (Some(cert), Some(key)) => Transport::Tls {
                cert,
                key,
                client_ca: args.client_ca,
            },
            (None, _) | (_, None) => {
                anyhow::bail!(
                    "--tls-cert and --tls-key are required (or --insecure-http on loopback for a demo)"
                )
            }
        }
    };
    let store = StoreLocation::parse(&args.store, args.store_password_file.clone());
    if matches!(store, StoreLocation::Redb(_)) && args.store_password_file.is_some() {
        anyhow::bail!(
            "--store-password-file is for a PostgreSQL store, but --store {} is a redb file",
            args.store
        );
    }
    let mut options = ServerOptions::new(args.listen, transport, Secret::new(&token_text), store);
    options.lease_ttl = Duration::from_millis(args.lease_ttl.0).max(Duration::from_secs(3));
    options.heartbeat_interval = Duration::from_millis(args.heartbeat_interval.0);
    options.console_session_lifetime =
        Duration::from_millis(args.console_session_lifetime.0).max(Duration::from_secs(60));
    options.metrics_public = args.metrics_public;
    options.waiters_per_host = args.waiters_per_host.max(1);
    options.limits.per_source = args.max_connections_per_source.max(1);
    options.limits.max_connections = args.max_connections.map(|n| n.max(1));
    options.trusted_proxies = TrustedProxies::new(args.trusted_proxies.clone());
    options.clock = Arc::new(SystemClock);
    if let Some(file) = &args.maintenance_windows {
        options.windows = Arc::new(read_windows(file)?);
    }
    let retention = &args.retention;
    let duration = |millis: Millis| Duration::from_millis(millis.0);
    options.retention = Retention {
        events: retention.retain_events.0.map(duration),
        desired_history: retention.retain_desired_history.0,
        audit: retention.retain_audit.0.map(duration),
        interval: duration(retention.retention_interval).max(Duration::from_secs(1)),
        dry_run: retention.retention_dry_run,
    };
    let running = start(options).await.map_err(|e| match e {
        ServeError::EmptyAdminToken => anyhow::anyhow!(
            "the admin token file {} is empty; put a long random secret in it",
            args.admin_token_file.display()
        ),
        other => anyhow::Error::new(other),
    })?;
    let shutdown = running.shutdown_token();
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("shutting down");
        shutdown.cancel();
    });
    running.wait().await?;
    Ok(())
}

async fn wait_for_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

async fn add_host(
    id: HostId,
    tags: Vec<fleetnode_wire::Tag>,
    token_file: Option<&Path>,
    connection: &Connection,
) -> Result<(), CliError> {
    let client = Client::new(connection)?;
    let body = fleetnode_wire::encode(&AddHost { id, tags });
    let (added, file): (HostAdded, _) = created_around(
        token_file,
        client.call(Method::POST, "/v1/admin/hosts", Some(body)),
    )
    .await?;
    match file {
        Some(file) => {
            let path = file.write(added.token.expose(), || {
                format!(
                    "host {} was added but its token could not be written; revoke-host it and add it again",
                    added.id
                )
            })?;
            if connection.json {
                println!(
                    "{}",
                    json(&serde_json::json!({ "id": added.id, "token_file": path }))
                );
            } else {
                println!("{}: added; token written to {}", added.id, path.display());
            }
        }
        None if connection.json => println!("{}", json(&added)),
        None => {
            println!("{}: added. Its token, shown only this once:", added.id);
            println!("{}", added.token.expose());
            println!(
                "Install it on the host as the agent's token file (mode 0400, owned by root)."
            );
        }
    }
    Ok(())
}

async fn set_target(args: SetTargetArgs) -> Result<(), CliError> {
    let selector = if args.selection.all {
        Selector::All
    } else if let Some(tag) = args.selection.tag {
        Selector::Tag { tag }
    } else {
        Selector::Hosts {
            hosts: args.selection.hosts,
        }
    };
    let request = SetTarget {
        selector,
        target: args.closure.clone(),
        mode: args.mode.map(Into::into),
        health: HealthOverrides {
            soak_ms: args.soak,
            sustained_failure_ms: args.sustained_failure,
            on_failure: args.on_failure.map(Into::into),
        },
    };
    let client = Client::new(&args.connection)?;
    let path = if args.force {
        "/v1/admin/targets?force=true"
    } else {
        "/v1/admin/targets"
    };
    let changed: DesiredChanged = client
        .call(Method::POST, path, Some(fleetnode_wire::encode(&request)))
        .await?;
    let what = format!("target {}", args.closure);
    print_json_or(&args.connection, &changed, || {
        render::changed(&changed, &what)
    });
    Ok(())
}

async fn change(
    connection: &Connection,
    path: &str,
    body: Option<Vec<u8>>,
    what: &str,
) -> anyhow::Result<()> {
    let client = Client::new(connection)?;
    let changed: DesiredChanged = client.call(Method::POST, path, body).await?;
    print_json_or(connection, &changed, || render::changed(&changed, what));
    Ok(())
}

fn print_json_or<T: serde::Serialize>(
    connection: &Connection,
    value: &T,
    text: impl FnOnce() -> String,
) {
    if connection.json {
        println!("{}", json(value));
    } else {
        print!("{}", text());
    }
}

pub(super) fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

/// The maintenance windows file given to `serve`, or an error naming the file and what is wrong
/// in it.
fn read_windows(file: &Path) -> anyhow::Result<TagWindows> {
    let shown = file.display();
    let text = std::fs::read_to_string(file)
        .map_err(|e| anyhow::anyhow!("cannot read the maintenance windows file {shown}: {e}"))?;
    let windows = TagWindows::from_toml(&text)
        .map_err(|e| anyhow::anyhow!("the maintenance windows file {shown} is refused: {e}"))?;
    for (tag, windows) in windows.iter() {
        let list: Vec<String> = windows.iter().map(ToString::to_string).collect();
        info!(%tag, windows = %list.join("; "), "maintenance windows");
    }
    Ok(windows)
}
