//! Wake-up latency: one host's desired state changed through one replica, until the host's
//! long-poll, waiting on another replica, is answered with it.
//!
//! The hosts measured are those of the second replica (of the only one when there is one).
//! Each is paused and then resumed, one change at a time on a kept operator connection: one of
//! the two changes goes through the first replica (crossing replicas: the commit's
//! notification must reach the host's replica, which reads the host again and wakes its
//! long-poll), the other through the host's own replica (the baseline: the same change, the
//! same commit, woken in the process that made it), alternating which comes first. A latency
//! runs from just before the operator's request to the host's answer; the operator's own
//! round trip (the commit) is printed beside it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::host::Host;
use super::link::Link;
use super::measure::{ms, quantile};
use super::setup::{Operator, Server};
use super::{Options, load_average};
use crate::{HarnessError, Result};

/// How long a host may take to see one change before the run fails.
const WAKE_DEADLINE: Duration = Duration::from_secs(30);

/// Latencies of one kind of change.
#[derive(Default)]
struct Kind {
    /// Request to host answered.
    woken: Vec<Duration>,
    /// Request to operator answered.
    committed: Vec<Duration>,
}

/// Measures `options.wakeups` changes of each kind and prints their quantiles.
pub async fn latencies(server: &Server, hosts: &[Arc<Host>], options: &Options) -> Result<()> {
    if options.wakeups == 0 {
        return Ok(());
    }
    let operators = server.operators();
    let replicas = operators.len().max(1);
    let own = 1 % replicas;
    let measured: Vec<&Arc<Host>> = hosts
        .iter()
        .filter(|host| host.index % replicas == own)
        .take(options.wakeups)
        .collect();
    let mut links = Vec::with_capacity(operators.len());
    for operator in operators {
        links.push(operator.link().await?);
    }
    let (mut cross, mut same) = (Kind::default(), Kind::default());
    for (n, host) in measured.iter().enumerate() {
        for paused in [true, false] {
            // Even hosts: paused across replicas, resumed on their own; odd hosts the other
            // way round.
            let across = paused == (n % 2 == 0);
            let (replica, kind) = if across {
                (0, &mut cross)
            } else {
                (own, &mut same)
            };
            let (woken, committed) =
                change(&operators[replica], &mut links[replica], host, paused).await?;
            kind.woken.push(woken);
            kind.committed.push(committed);
        }
    }
    println!(
        "\n## wake-up latency: {} hosts of replica {own}, each paused and resumed (load {})",
        measured.len(),
        load_average()
    );
    if replicas > 1 {
        report("changed through replica 0 (across replicas)", &mut cross);
        report(
            &format!("changed through replica {own} (its own; the baseline)"),
            &mut same,
        );
        let ratio = ms(quantile(&cross.woken, 0.99)) / ms(quantile(&same.woken, 0.99)).max(1e-3);
        println!("p99 across / p99 own: {ratio:.2}");
    } else {
        cross.woken.append(&mut same.woken);
        cross.committed.append(&mut same.committed);
        report("changed through the only replica", &mut cross);
    }
    Ok(())
}

/// One change; returns when the host had it and when the operator's answer came, both from
/// just before the request.
async fn change(
    operator: &Operator,
    link: &mut Link,
    host: &Host,
    paused: bool,
) -> Result<(Duration, Duration)> {
    let mut seen = host.changes();
    let started = Instant::now();
    let revision = operator.hold(link, &host.id, paused).await?;
    let committed = started.elapsed();
    let reached = tokio::time::timeout(WAKE_DEADLINE, seen.wait_for(|(r, _)| *r >= revision))
        .await
        .ok()
        .and_then(Result::ok)
        .map(|seen| seen.1)
        .ok_or_else(|| HarnessError::Timeout {
            what: format!("host {}", host.id),
            report: format!("its long-poll was not answered with revision {revision}"),
        })?;
    Ok((reached.saturating_duration_since(started), committed))
}

fn report(what: &str, kind: &mut Kind) {
    kind.woken.sort();
    kind.committed.sort();
    println!(
        "{what}: {} changes; host woken p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; operator answered p50 {:.1} ms, p99 {:.1} ms",
        kind.woken.len(),
        ms(quantile(&kind.woken, 0.5)),
        ms(quantile(&kind.woken, 0.99)),
        ms(kind.woken.last().copied().unwrap_or_default()),
        ms(quantile(&kind.committed, 0.5)),
        ms(quantile(&kind.committed, 0.99)),
    );
}
