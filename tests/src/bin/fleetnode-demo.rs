//! `fleetnode-demo`: a control plane and one agent on a fake NixOS root, narrated.
//!
//! It runs the real `fleetnode-cp` and `fleetnode-agent` binaries (found next to this one) over
//! real TLS on loopback. The agent's real NixOS backend acts on a fake root whose
//! `switch-to-configuration`, `nix-store`, `nix-env`, `systemd-run` and `systemctl` are faithful
//! stand-ins. The demo prints every operator command it runs and every event the agent reports,
//! with the reason of every decision in the agent's own words.

use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use fleetnode_state_machine::{Phase, Reason, Revision, StorePath};
use fleetnode_tests::harness::Options;
use fleetnode_tests::narrate::{describe, short};
use fleetnode_tests::{Harness, HarnessError, Health, Result};
use fleetnode_wire::HostDetail;

/// Runs fleetnode end to end on this machine, on a fake NixOS root, and explains what happens.
#[derive(Debug, Parser)]
#[command(name = "fleetnode-demo", version)]
struct Args {
    /// Keep the work directory (logs, configuration, store) and the fake root afterwards.
    #[arg(long)]
    keep: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut demo = Demo {
        started: Instant::now(),
        shown_seq: 0,
    };
    match demo.run(args.keep) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("\nfleetnode-demo failed:\n{error}");
            ExitCode::FAILURE
        }
    }
}

struct Demo {
    started: Instant,
    shown_seq: u64,
}

impl Demo {
    fn run(&mut self, keep: bool) -> Result<()> {
        println!("fleetnode demo: a control plane and one agent on a fake NixOS root");
        let options = Options {
            keep,
            ..Options::default()
        };
        let mut h = Harness::start_with(options)?;
        self.register(&h)?;
        let gen1 = h.initial().clone();
        let gen2 = h.add_closure("nixos-system-web-01-gen-2", Health::Healthy)?;
        let gen3 = h.add_closure("nixos-system-web-01-gen-3", Health::Broken)?;
        self.deploy_healthy(&mut h, &gen2)?;
        self.deploy_broken(&mut h, &gen3, &gen2)?;
        self.operator_rollback(&mut h, &gen1)?;
        self.finish(h, keep)
    }

    fn register(&mut self, h: &Harness) -> Result<()> {
        heading("1. The control plane starts and the host registers");
        let work = h.work_dir().display().to_string();
        println!("   work directory ($WORK): {work}");
        println!("   fake NixOS root:        {}", h.root().root().display());
        for command in h.setup_commands() {
            println!("$ {}", command.replace(&work, "$WORK"));
        }
        let detail = h.detail()?;
        self.show_events(&detail);
        self.show_state(&detail);
        println!(
            "\n   (every `fleetnode-cp` command below also gets {})",
            h.cp.shown_connection().replace(&work, "$WORK")
        );
        Ok(())
    }

    fn deploy_healthy(&mut self, h: &mut Harness, gen2: &StorePath) -> Result<()> {
        heading("2. Deploy gen-2 (healthy): realise, activate with `test`, soak, commit");
        let revision = self.operator(
            h,
            &[
                "set-target",
                gen2.as_str(),
                "--host",
                h.host(),
                "--soak",
                "3s",
            ],
        )?;
        let detail = self.settle(h, revision)?;
        expect_phase(h, &detail, "converged")?;
        Ok(())
    }

    fn deploy_broken(&mut self, h: &mut Harness, gen3: &StorePath, gen2: &StorePath) -> Result<()> {
        heading("3. Deploy gen-3, which is broken: its health probe fails during the soak");
        let revision = self.operator(
            h,
            &[
                "set-target",
                gen3.as_str(),
                "--host",
                h.host(),
                "--soak",
                "3s",
            ],
        )?;
        let detail = self.settle(h, revision)?;
        expect_phase(h, &detail, "reverted")?;
        match &detail.mirror.phase {
            Phase::Reverted(reverted)
                if &reverted.to == gen2
                    && matches!(reverted.reason, Reason::ProbeFailed { .. }) =>
            {
                println!(
                    "   => rolled back by itself to {}: {}",
                    short(gen2),
                    reverted.reason
                );
                Ok(())
            }
            other => Err(unexpected(
                h,
                &detail,
                format!("expected a revert to gen-2 because the probe failed, got {other:?}"),
            )),
        }
    }

    fn operator_rollback(&mut self, h: &mut Harness, gen1: &StorePath) -> Result<()> {
        heading("4. The operator rolls back to gen-1");
        let revision = self.operator(h, &["rollback", h.host(), "--to", gen1.as_str()])?;
        let detail = self.settle(h, revision)?;
        expect_phase(h, &detail, "reverted")?;
        if h.root().current().as_ref() != Some(gen1) || h.root().boot_entry().as_ref() != Some(gen1)
        {
            return Err(unexpected(
                h,
                &detail,
                "gen-1 is not live and the boot default".to_owned(),
            ));
        }
        println!(
            "   => the host runs {} again and boots it by default",
            short(gen1)
        );
        Ok(())
    }

    fn finish(&mut self, h: Harness, keep: bool) -> Result<()> {
        heading("5. The fleet");
        let hosts = h.cp(&["hosts"])?;
        println!("$ {}\n{}", hosts.shown, indent(&hosts.stdout).trim_end());
        let agent_log = h.agent.log().to_owned();
        let cp_log = h.cp.log().to_owned();
        if keep {
            let (work, root) = h.keep_files();
            println!("\nKept for you to look at:");
            println!("   agent log:         {}", agent_log.display());
            println!("   control plane log: {}", cp_log.display());
            println!("   work directory:    {}", work.display());
            println!(
                "   fake NixOS root:   {} (commands run: fake/command-log)",
                root.display()
            );
        } else {
            println!(
                "\nLogs were in {} and {};",
                agent_log.display(),
                cp_log.display()
            );
            println!("they are removed now (run with --keep to keep them).");
        }
        println!("\nDemo complete in {:.0?}.", self.started.elapsed());
        Ok(())
    }

    /// Runs an operator command, prints it and its answer, and returns the host's new revision.
    fn operator(&mut self, h: &Harness, args: &[&str]) -> Result<Revision> {
        let output = h.cp(args)?;
        println!("$ {}", shorten_paths(&output.shown));
        print!("{}", indent(&output.stdout));
        Ok(h.detail()?.desired.revision)
    }

    /// Waits until the host handled `revision` and rests, printing events as they arrive.
    fn settle(&mut self, h: &mut Harness, revision: Revision) -> Result<HostDetail> {
        let detail = h.wait_for(&format!("{revision} handled, at rest"), |detail| {
            self.show_events(detail);
            detail.mirror.handled == Some(revision) && detail.mirror.phase.is_at_rest()
        })?;
        self.show_events(&detail);
        self.show_state(&detail);
        Ok(detail)
    }

    fn show_events(&mut self, detail: &HostDetail) {
        let shown = self.shown_seq;
        for event in detail.recent_events.iter().filter(|e| e.seq > shown) {
            println!(
                "   [{:>5.1}s] {}",
                self.started.elapsed().as_secs_f64(),
                describe(event)
            );
            self.shown_seq = event.seq;
        }
    }

    fn show_state(&self, detail: &HostDetail) {
        let system = &detail.mirror.system;
        let name = |p: Option<&StorePath>| p.map_or_else(|| "-".to_owned(), short);
        println!(
            "   => phase {}, live {}, boot entry {}",
            detail.row.phase,
            name(system.current.as_ref()),
            name(system.profile.as_ref())
        );
    }
}

fn heading(text: &str) {
    println!("\n== {text}");
}

fn indent(text: &str) -> String {
    text.lines().map(|line| format!("   {line}\n")).collect()
}

/// Store paths shortened as `fleetnode-cp hosts` shows them, so commands fit a line.
fn shorten_paths(command: &str) -> String {
    command
        .split(' ')
        .map(|word| match StorePath::parse(word) {
            Ok(path) => format!("/nix/store/{}", short(&path)),
            Err(_) => word.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn expect_phase(h: &Harness, detail: &HostDetail, phase: &str) -> Result<()> {
    if detail.row.phase.name() == phase {
        return Ok(());
    }
    Err(unexpected(
        h,
        detail,
        format!("expected phase {phase}, the host is {}", detail.row.phase),
    ))
}

fn unexpected(h: &Harness, detail: &HostDetail, what: String) -> HarnessError {
    HarnessError::Unexpected {
        what,
        report: h.report(Some(detail)),
    }
}
