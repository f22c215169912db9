//! `fleetnode-demo`: a control plane and a fleet of agents on fake NixOS roots, rolling
//! releases out in waves, narrated.
//!
//! It runs the real `fleetnode-cp` and `fleetnode-agent` binaries (found next to this one) over
//! real TLS on loopback. Each agent's real NixOS backend acts on its own fake root whose
//! `switch-to-configuration`, `nix-store`, `nix-env`, `systemd-run` and `systemctl` are faithful
//! stand-ins. The demo prints every operator command it runs; the live rollout tables are
//! `fleetnode-cp rollout status --watch` itself, redrawn in place on a terminal.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use fleetnode_fixtures::fakeroot::Behaviour;
use fleetnode_state_machine::{PhaseKind, StorePath};
use fleetnode_tests::fleet::Member;
use fleetnode_tests::narrate::short;
use fleetnode_tests::release::activations_of;
use fleetnode_tests::{Fleet, FleetOptions, HarnessError, Release, Result, Shape};
use fleetnode_wire::{HostRollback, HostState, RolloutId, RolloutPhase, RolloutStatus};

/// How long each wave bakes in the demo.
const BAKE: &str = "1s";
/// How long the switches of the restart act take, so the wave is still running when the
/// control plane stops.
const SLOW_SWITCH: Duration = Duration::from_secs(4);

/// Runs a fleetnode fleet on this machine, on fake NixOS roots, and rolls releases out to it.
#[derive(Debug, Parser)]
#[command(name = "fleetnode-demo", version)]
struct Args {
    /// Keep the work directory (logs, configurations, store, manifests) and the fake roots.
    #[arg(long)]
    keep: bool,
    /// After the story, keep the fleet running so you can click through it in the web
    /// console, until Ctrl-C.
    #[arg(long)]
    console: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let started = Instant::now();
    match run(&args, started) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("\nfleetnode-demo failed:\n{error}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args, started: Instant) -> Result<()> {
    let keep = args.keep;
    println!(
        "fleetnode demo: one control plane, four hosts (web-01 is the canary), rollouts in waves"
    );
    let options = FleetOptions {
        keep,
        ..FleetOptions::hosts(4, 1)
    };
    let mut fleet = Fleet::start(options)?;
    let work = fleet.work_dir().display().to_string();
    heading("1. The control plane starts and the hosts register");
    println!("   work directory ($WORK): {work}");
    for command in fleet.setup_commands() {
        println!("$ {}", command.replace(&work, "$WORK"));
    }
    println!(
        "   (every `fleetnode-cp` command below also gets {})",
        fleet.cp.shown_connection().replace(&work, "$WORK")
    );
    show(&fleet, &["hosts"])?;
    let console = console_login(&fleet)?;

    let gen2 = healthy_waves(&mut fleet, &work)?;
    broken_canary(&mut fleet, &work, &gen2)?;
    let restarted = restart_mid_rollout(&mut fleet, &work)?;
    operator_rollback(&mut fleet, restarted, &gen2)?;
    let console = args.console.then_some(console);
    finish(fleet, keep, console.as_deref(), started)
}

/// The web console's address and a sign-in token: a named operator added for the demo, so
/// the audit log shows what you do there under its own name.
fn console_login(fleet: &Fleet) -> Result<String> {
    let token_file = fleet.work_dir().join("console-operator.token");
    let token_path = token_file.display().to_string();
    fleet.cp(&["add-operator", "newcomer", "--token-file", &token_path])?;
    let token = std::fs::read_to_string(&token_file).map_err(fleetnode_tests::HarnessError::io(
        format!("read {token_path}"),
    ))?;
    let login = token.trim().to_owned();
    print_console(fleet, &login);
    println!("   (run with --console to keep the fleet running after the story)");
    Ok(login)
}

fn print_console(fleet: &Fleet, token: &str) {
    println!("   web console: {}/console/", fleet.cp.url());
    println!("   sign in with the operator token {token}");
    println!(
        "   (its certificate is the demo's own, signed by {}: let the browser accept it)",
        fleet.work_dir().join("pki").join("ca.pem").display()
    );
}

/// Blocks until SIGINT (Ctrl-C) or SIGTERM.
fn wait_for_interrupt() -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(fleetnode_tests::HarnessError::io(
            "start a runtime to wait for Ctrl-C",
        ))?;
    runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(fleetnode_tests::HarnessError::io("wait for SIGTERM"))?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        Ok(())
    })
}

/// A healthy release goes out in three waves.
fn healthy_waves(fleet: &mut Fleet, work: &str) -> Result<Release> {
    heading("2. CI built gen-2 for every host; it goes out in waves: the canary, half, everyone");
    let gen2 = fleet.release("gen-2", &[])?;
    let manifest = fleet.write_manifest(&gen2, "deploy-gen-2", Shape::CachixDeploy)?;
    let text = std::fs::read_to_string(&manifest)
        .map_err(HarnessError::io(format!("read {}", manifest.display())))?;
    let shown = manifest.display().to_string().replace(work, "$WORK");
    println!("$ cat {shown}   # Cachix Deploy's deploy.json, as CI wrote it");
    print!("{}", indent(&text));
    let waves = ["--waves", "tag:canary,50%,100%", "--bake", BAKE];
    let id = start(fleet, &manifest, work, &waves)?;
    let completed = watch(fleet, id)?;
    let status = fleet.rollout(id)?;
    let done = completed && matches!(status.rollout.phase, RolloutPhase::Completed(_));
    expect(fleet, &status, done, "completed")?;
    println!("   => the watch exited 0: every host converged on its gen-2, one wave at a time");
    Ok(gen2)
}

/// A release broken on the canary halts there; nobody else receives it.
fn broken_canary(fleet: &mut Fleet, work: &str, gen2: &Release) -> Result<()> {
    heading("3. gen-3 is broken: it fails on the canary, the rollout halts, the rest is untouched");
    let gen3 = fleet.release("gen-3", &["web-01", "web-02", "web-03", "web-04"])?;
    let manifest = fleet.write_manifest(&gen3, "release-gen-3", Shape::Hosts)?;
    let id = start(
        fleet,
        &manifest,
        work,
        &["--waves", "tag:canary,100%", "--bake", BAKE],
    )?;
    let completed = watch(fleet, id)?;
    let status = fleet.rollout(id)?;
    let halted = match &status.rollout.phase {
        RolloutPhase::Halted(halted) if !completed => halted.cause.clone(),
        _ => return Err(unexpected(fleet, &status, "halted at the canary")),
    };
    let untouched = fleet.members[1..].iter().all(|member| {
        let pending = status
            .rollout
            .hosts
            .iter()
            .any(|(host, p)| host.as_str() == member.id() && p.state == HostState::Pending);
        pending && member.root().current().as_ref() == Some(gen2.of(member.id()))
    });
    if !untouched {
        return Err(unexpected(
            fleet,
            &status,
            "the other hosts untouched on gen-2",
        ));
    }
    println!("   => the watch exited non-zero: halted because {halted}");
    println!("   => web-02, web-03 and web-04 never received gen-3 and still run gen-2");
    show(fleet, &["hosts"])
}

/// The control plane stops and starts again while a wave is running.
fn restart_mid_rollout(fleet: &mut Fleet, work: &str) -> Result<RolloutId> {
    heading("4. gen-4 rolls out; the control plane is stopped and started in the middle of a wave");
    let gen4 = fleet.release("gen-4", &[])?;
    for member in &fleet.members[1..] {
        let slow = Behaviour::SucceedAfter(SLOW_SWITCH);
        member.root().behaviour(gen4.of(member.id()), slow);
    }
    let manifest = fleet.write_manifest(&gen4, "release-gen-4", Shape::Hosts)?;
    let id = start(
        fleet,
        &manifest,
        work,
        &["--waves", "1,100%", "--bake", BAKE],
    )?;
    let before = fleet.wait_rollout(id, "the second wave to be switching", |s| {
        s.rollout.wave() == 1
            && s.hosts
                .iter()
                .filter(|h| h.phase == PhaseKind::Activating)
                .count()
                == 3
    })?;
    show(fleet, &["rollout", "status", &id.to_string()])?;
    println!("$ systemctl stop fleetnode-control-plane   # here: SIGTERM to fleetnode-cp serve");
    fleet.cp.stop()?;
    for member in &fleet.members[1..] {
        let status = member.agent.status()?;
        let phase = status["phase"].as_str().unwrap_or("?");
        println!(
            "   {}: {phase} (its agent carries on without the control plane)",
            member.id()
        );
    }
    println!("$ systemctl start fleetnode-control-plane");
    fleet.cp.start_again()?;
    let after = fleet.rollout(id)?;
    let same = before.rollout.hosts.iter().all(|(host, was)| {
        after.rollout.hosts.get(host).map(|p| p.state.revision()) == Some(was.state.revision())
    });
    if !same || after.rollout.wave() != 1 {
        return Err(unexpected(fleet, &after, "where it was before the restart"));
    }
    println!("   => back, still in wave 2 with the same directives; the watch picks it up");
    let completed = watch(fleet, id)?;
    let status = fleet.rollout(id)?;
    let done = completed && matches!(status.rollout.phase, RolloutPhase::Completed(_));
    expect(fleet, &status, done, "completed")?;
    for member in &fleet.members {
        let target = gen4.of(member.id());
        let given = activations_of(&fleet.detail(member.id())?, target);
        if given != 1 || member.root().current().as_ref() != Some(target) {
            return Err(unexpected(
                fleet,
                &status,
                "every host on gen-4, given it once",
            ));
        }
        println!("   {} runs {}, given to it once", member.id(), name(member));
    }
    println!("   => nothing lost, nothing given twice");
    Ok(id)
}

/// The operator rolls the whole of a rollout back.
fn operator_rollback(fleet: &mut Fleet, id: RolloutId, gen2: &Release) -> Result<()> {
    heading("5. The operator changes their mind: every host gen-4 reached goes back");
    show(fleet, &["rollout", "rollback", &id.to_string()])?;
    // No longer a plain completion: the watch says so with a non-zero exit.
    let completed = watch(fleet, id)?;
    let status = fleet.rollout(id)?;
    let all_back = status
        .rollout
        .hosts
        .values()
        .all(|p| matches!(p.rollback, Some(HostRollback::Done { .. })));
    let on_gen2 = fleet
        .members
        .iter()
        .all(|m| m.root().current().as_ref() == Some(gen2.of(m.id())));
    if completed || !(all_back && on_gen2) {
        return Err(unexpected(fleet, &status, "every host back on gen-2"));
    }
    println!("   => every host runs gen-2 again");
    Ok(())
}

fn finish(fleet: Fleet, keep: bool, console: Option<&str>, started: Instant) -> Result<()> {
    heading("6. The fleet");
    show(&fleet, &["hosts"])?;
    show(&fleet, &["rollout", "list"])?;
    if let Some(token) = console {
        heading("7. The web console");
        print_console(&fleet, token);
        println!("   the fleet keeps running for you to click through; Ctrl-C stops it");
        wait_for_interrupt()?;
    }
    let cp_log = fleet.cp.log().to_owned();
    if keep {
        let (work, roots) = fleet.keep_files();
        println!("\nKept for you to look at:");
        println!("   control plane log: {}", cp_log.display());
        println!(
            "   work directory:    {} (agent logs: <host>.log)",
            work.display()
        );
        for root in roots {
            println!(
                "   fake NixOS root:   {} (commands run: fake/command-log)",
                root.display()
            );
        }
    } else {
        println!("\nThe logs are removed now (run with --keep to keep them).");
    }
    println!("\nDemo complete in {:.0?}.", started.elapsed());
    Ok(())
}

/// `fleetnode-cp rollout start`, printed as typed.
fn start(
    fleet: &Fleet,
    manifest: &std::path::Path,
    work: &str,
    extra: &[&str],
) -> Result<RolloutId> {
    let file = manifest.display().to_string();
    println!(
        "$ fleetnode-cp rollout start {} {}",
        file.replace(work, "$WORK"),
        extra.join(" ")
    );
    let status = fleet.start_rollout(manifest, extra)?;
    println!("   rollout {} started", status.rollout.id);
    Ok(status.rollout.id)
}

/// `fleetnode-cp rollout status <id> --watch`, on the demo's own output, until it settles;
/// true when it exited 0 (the rollout completed with every host converged, not rolled back).
fn watch(fleet: &Fleet, id: RolloutId) -> Result<bool> {
    let id = id.to_string();
    println!("$ fleetnode-cp rollout status {id} --watch");
    let status = fleet
        .cp
        .command(&["rollout", "status", &id, "--watch"])
        .status()
        .map_err(HarnessError::io(
            "run `fleetnode-cp rollout status --watch`",
        ))?;
    Ok(status.success())
}

/// Runs an operator command and prints it with its output.
fn show(fleet: &Fleet, args: &[&str]) -> Result<()> {
    let output = fleet.cp(args)?;
    println!("$ {}", output.shown);
    print!("{}", indent(&output.stdout));
    Ok(())
}

fn name(member: &Member) -> String {
    member
        .root()
        .current()
        .map_or_else(|| "nothing".to_owned(), |p: StorePath| short(&p))
}

fn expect(fleet: &Fleet, status: &RolloutStatus, ok: bool, what: &str) -> Result<()> {
    if ok {
        return Ok(());
    }
    Err(unexpected(fleet, status, what))
}

fn unexpected(fleet: &Fleet, status: &RolloutStatus, what: &str) -> HarnessError {
    HarnessError::Unexpected {
        what: format!(
            "expected rollout {} {what}, it is {}",
            status.rollout.id,
            status.rollout.phase.name()
        ),
        report: fleet.report(Some(status.rollout.id)),
    }
}

fn heading(text: &str) {
    println!("\n== {text}");
}

fn indent(text: &str) -> String {
    text.lines().map(|line| format!("   {line}\n")).collect()
}
