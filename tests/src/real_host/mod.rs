//! The real-host tier: the agent on real systemd and real Nix.
//!
//! A [`RealHost`] is one Debian bookworm container ([`rootfs`], [`container`]) booted with
//! systemd 252 as PID 1 and running Debian's Nix 2.8 with its daemon. In it run, as real
//! systemd services, `fleetnode-cp` from `nix/units/fleetnode-cp.service` and
//! `fleetnode-agent` from `nix/units/fleetnode-agent.service` (`Type=notify`, watchdog,
//! `LoadCredential=` token, hardening), both unmodified. The agent's `[system]` names the real
//! `nix-store`, `nix-env`, `systemd-run`, `systemctl` (and the `nix` beside `nix-store`) on root
//! `/`.
//!
//! Closures are built by the container's Nix from `tests/real-host/closure.nix`: two store
//! paths each, a `bin/switch-to-configuration` with the real contract that starts the
//! generation's own service (`fleetnode-generation.service`, an HTTP endpoint on
//! 127.0.0.1:8080 the agent probes), see [`Behaviour`]. [`RealHost::publish`] signs a closure
//! with the binary cache's key (`nix store sign`), copies it to the `file://` cache (`nix
//! copy`) and deletes it from the store, so the agent substitutes it for real. A boot-loader
//! stand-in (`fleetnode-test-bootloader.service`) boots the default entry at every boot.
//!
//! Nothing here asserts time: waits poll with a deadline that is only a safety net.

pub mod container;
pub mod rootfs;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use fleetnode_fixtures::certs::TestCa;
use fleetnode_state_machine::{Revision, StorePath};
use fleetnode_wire::{DesiredChanged, HostDetail};

use crate::{HarnessError, Result, binaries, narrate};
pub use container::Container;

/// The host's id at the control plane.
pub const HOST: &str = "real-01";
/// The safety net of every wait.
pub const DEADLINE: Duration = Duration::from_secs(120);
/// Where the control plane listens inside (fixed by its unit).
const CP_URL: &str = "https://localhost:8443";
/// The control plane's files inside, as its unit expects them.
const CP_DIR: &str = "/etc/fleetnode-cp";
/// The agent's configuration directory inside, as its unit expects it.
const AGENT_DIR: &str = "/etc/fleetnode";
/// The tier's own files inside (Nix expressions, keys).
const TESTS_DIR: &str = "/etc/fleetnode-tests";
/// The binary cache.
pub const CACHE_URL: &str = "file:///var/cache/fleetnode-binary-cache";
/// The log every test switch appends a line to.
pub const SWITCH_LOG: &str = "/var/log/fleetnode-switches.log";
/// The unit of a generation's service.
pub const GENERATION_UNIT: &str = "fleetnode-generation.service";
/// `--extra-experimental-features nix-command`, which Nix 2.8 needs for `nix store`.
const NIX: &[&str] = &["nix", "--extra-experimental-features", "nix-command"];
/// How often a wait looks again.
const POLL: Duration = Duration::from_millis(500);

const UNIT_AGENT: &str = include_str!("../../../nix/units/fleetnode-agent.service");
const UNIT_CP: &str = include_str!("../../../nix/units/fleetnode-cp.service");
const CLOSURE_NIX: &str = include_str!("../../real-host/closure.nix");
const BUILD_GENERATION: &str = include_str!("../../real-host/build-generation.sh");
const SWITCH_SCRIPT: &str = include_str!("../../real-host/switch-to-configuration");
const ACTIVATE_SCRIPT: &str = include_str!("../../real-host/activate");
const BOOTLOADER_UNIT: &str = include_str!("../../real-host/fleetnode-test-bootloader.service");
const BOOT_DEFAULT_ENTRY: &str = include_str!("../../real-host/boot-default-entry");
const PREPARE_HOST: &str = include_str!("../../real-host/prepare-host");

/// How a generation's switch and service behave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behaviour {
    /// Switches at once; its service serves `/health`.
    Healthy,
    /// Switches at once; its service starts, then dies: the probes fail.
    Broken,
    /// Switches at once, but its service cannot start: the switch exits 4.
    UnitFails,
    /// Waits this long, then switches like [`Behaviour::Healthy`].
    Slow(Duration),
    /// Ignores SIGTERM and never finishes.
    IgnoresTerm,
}

impl Behaviour {
    fn as_arg(&self) -> String {
        match self {
            Self::Healthy => "healthy".into(),
            Self::Broken => "broken".into(),
            Self::UnitFails => "unit-fails".into(),
            Self::Slow(delay) => format!("slow:{}", delay.as_secs()),
            Self::IgnoresTerm => "ignore-term".into(),
        }
    }
}

/// Which key signs a closure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signer {
    /// The binary cache's key, which the agent trusts.
    Cache,
    /// Another key, which the agent does not trust.
    Rogue,
}

/// The agent's configuration beyond what every host has.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// `activation.mode`.
    pub mode: String,
    /// `activation.timeout` and `activation.rollback_timeout`.
    pub activation_timeout: String,
    /// `health.soak`.
    pub soak: String,
    /// `reboot.allow`.
    pub allow_reboot: bool,
}

impl Default for AgentOptions {
    fn default() -> Self {
        Self {
            mode: "test-then-commit".into(),
            activation_timeout: "60s".into(),
            soak: "3s".into(),
            allow_reboot: false,
        }
    }
}

/// One real host: the container, its control plane and its agent.
#[derive(Debug)]
pub struct RealHost {
    container: Container,
    /// Generation 1, installed by hand before the agent first started.
    initial: StorePath,
    work: tempfile::TempDir,
    trusted_key: String,
}

impl RealHost {
    /// Unpacks the root file system (building it first when it is not cached), boots it,
    /// installs the control plane, generation 1 and the agent, and returns once the agent
    /// reported in, idle. `name` names the machine and its directory.
    pub fn start(name: &str, options: &AgentOptions) -> Result<Self> {
        rootfs::check_prerequisites()?;
        let tarball = rootfs::cached_tarball()?;
        let mut work = tempfile::Builder::new()
            .prefix(&format!("fleetnode-real-host-{name}-"))
            .tempdir_in("/var/tmp")
            .map_err(HarnessError::io("create the host's directory"))?;
        work.disable_cleanup(std::env::var_os("FLEETNODE_REAL_HOST_KEEP").is_some());
        let root = work.path().join("root");
        std::fs::create_dir_all(&root)
            .map_err(HarnessError::io(format!("create {}", root.display())))?;
        rootfs::unpack(&tarball, &root)?;
        lay_out(&root, name)?;
        let machine = format!("fleetnode-{name}");
        let container = Container::boot(&root, &machine, &work.path().join("console.log"))?;
        let mut host = Self {
            container,
            initial: StorePath::parse("/nix/store/00000000000000000000000000000000-none")
                .map_err(|e| HarnessError::setup("a placeholder path")(e.to_string()))?,
            work,
            trusted_key: String::new(),
        };
        host.container
            .run(&[&format!("{TESTS_DIR}/prepare-host")])?;
        host.trusted_key = host
            .container
            .run(&["cat", &format!("{TESTS_DIR}/cache.pub")])?
            .trim()
            .to_owned();
        host.install(options)?;
        Ok(host)
    }

    /// The container.
    pub fn container(&mut self) -> &mut Container {
        &mut self.container
    }

    /// Generation 1.
    pub fn initial(&self) -> &StorePath {
        &self.initial
    }

    /// The trusted public key (`name:base64`).
    pub fn trusted_key(&self) -> &str {
        &self.trusted_key
    }

    /// Builds a generation named `name` with the container's Nix; it stays in the store,
    /// unsigned (a path built locally carries no signature).
    pub fn build(&mut self, name: &str, behaviour: &Behaviour) -> Result<StorePath> {
        let printed = self.container.run(&[
            "nix-build",
            "--no-out-link",
            &format!("{TESTS_DIR}/closure.nix"),
            "--argstr",
            "name",
            name,
            "--argstr",
            "behaviour",
            &behaviour.as_arg(),
        ])?;
        store_path(printed.trim())
    }

    /// Signs every path of `closure` in the local store with `signer`'s key.
    pub fn sign(&mut self, closure: &StorePath, signer: Signer) -> Result<()> {
        let key = match signer {
            Signer::Cache => "cache.sec",
            Signer::Rogue => "rogue.sec",
        };
        let key_file = format!("{TESTS_DIR}/{key}");
        let mut argv = NIX.to_vec();
        argv.extend(["store", "sign", "--key-file", &key_file, "--recursive"]);
        argv.push(closure.as_str());
        self.container.run(&argv).map(drop)
    }

    /// Signs `closure` with the cache's key, copies it to the binary cache and deletes it
    /// from the store, so that realising it substitutes it from the cache.
    pub fn publish(&mut self, closure: &StorePath) -> Result<()> {
        self.sign(closure, Signer::Cache)?;
        let mut argv = NIX.to_vec();
        argv.extend(["copy", "--to", CACHE_URL, closure.as_str()]);
        self.container.run(&argv)?;
        self.container.bash(&format!(
            "nix-store --delete $(nix-store --query --requisites {closure}) >/dev/null 2>&1; \
             if [ -e {closure} ]; then echo 'still in the store: {closure}' >&2; exit 1; fi"
        ))?;
        Ok(())
    }

    /// Builds a generation and publishes it: the usual case.
    pub fn published(&mut self, name: &str, behaviour: &Behaviour) -> Result<StorePath> {
        let closure = self.build(name, behaviour)?;
        self.publish(&closure)?;
        Ok(closure)
    }

    /// `nix store make-content-addressed`: the closure rewritten into content-addressed
    /// paths, which carry no signature.
    pub fn make_content_addressed(&mut self, closure: &StorePath) -> Result<StorePath> {
        let mut argv = NIX.to_vec();
        argv.extend([
            "store",
            "make-content-addressed",
            "--json",
            closure.as_str(),
        ]);
        let printed = self.container.run(&argv)?;
        let parsed: serde_json::Value =
            serde_json::from_str(&printed).map_err(|e| HarnessError::Unreadable {
                command: argv.join(" "),
                message: e.to_string(),
                output: printed.clone(),
            })?;
        let rewritten = parsed["rewrites"][closure.as_str()]
            .as_str()
            .unwrap_or_default();
        store_path(rewritten)
    }

    /// `nix path-info --json --recursive` of a closure.
    pub fn path_info(&mut self, closure: &StorePath) -> Result<String> {
        let mut argv = NIX.to_vec();
        argv.extend(["path-info", "--json", "--recursive", closure.as_str()]);
        self.container.run(&argv)
    }

    /// Runs `fleetnode-cp <args>` inside against the control plane.
    pub fn cp(&mut self, args: &[&str]) -> Result<String> {
        let ca = format!("{CP_DIR}/ca.pem");
        let token = format!("{CP_DIR}/admin-token");
        let mut argv = vec!["fleetnode-cp"];
        argv.extend_from_slice(args);
        argv.extend([
            "--url",
            CP_URL,
            "--ca-file",
            &ca,
            "--admin-token-file",
            &token,
        ]);
        self.container.run(&argv)
    }

    /// `fleetnode-cp set-target <closure> --host real-01 <extra>`; the new revision.
    pub fn set_target(&mut self, closure: &StorePath, extra: &[&str]) -> Result<Revision> {
        let mut args = vec!["set-target", closure.as_str(), "--host", HOST];
        args.extend_from_slice(extra);
        self.revision_of(&args)
    }

    /// `fleetnode-cp rollback real-01`; the new revision.
    pub fn rollback(&mut self) -> Result<Revision> {
        self.revision_of(&["rollback", HOST])
    }

    /// `fleetnode-cp host real-01 --json`.
    pub fn detail(&mut self) -> Result<HostDetail> {
        let printed = self.cp(&["host", HOST, "--json"])?;
        serde_json::from_str(&printed).map_err(|e| HarnessError::Unreadable {
            command: format!("fleetnode-cp host {HOST} --json"),
            message: e.to_string(),
            output: printed,
        })
    }

    /// Polls the host's detail until `done` holds, booting the container again when it
    /// rebooted; fails after [`DEADLINE`] with a report.
    pub fn wait_for(
        &mut self,
        what: &str,
        mut done: impl FnMut(&HostDetail) -> bool,
    ) -> Result<HostDetail> {
        let started = Instant::now();
        let mut last = None;
        while started.elapsed() < DEADLINE {
            self.container.poll()?;
            // The control plane is briefly unreachable while the container reboots.
            if let Ok(detail) = self.detail() {
                if done(&detail) {
                    return Ok(detail);
                }
                last = Some(detail);
            }
            std::thread::sleep(POLL);
        }
        Err(HarnessError::Timeout {
            what: format!("{what} (host {HOST}, {DEADLINE:?})"),
            report: self.report(last.as_ref()),
        })
    }

    /// Waits until the host handled `revision` and came to rest; fails when it rests in
    /// another phase than `phase`.
    pub fn wait_settled(&mut self, revision: Revision, phase: &str) -> Result<HostDetail> {
        let detail = self.wait_for(&format!("{revision} handled, at rest"), |detail| {
            detail.mirror.handled == Some(revision) && detail.mirror.phase.is_at_rest()
        })?;
        if detail.row.phase.name() != phase {
            return Err(HarnessError::Unexpected {
                what: format!(
                    "host {HOST} came to rest {} after {revision}, expected {phase}",
                    detail.row.phase
                ),
                report: self.report(Some(&detail)),
            });
        }
        Ok(detail)
    }

    /// The host's real state: the system links, the profile, the boot entry, its units.
    pub fn state(&mut self) -> Result<HostState> {
        // /run is the container's own tmpfs: read its links from inside.
        let mut run_link = |path: &str| -> Result<Option<StorePath>> {
            let output = self.container.output(&["readlink", path])?;
            Ok(StorePath::parse(String::from_utf8_lossy(&output.stdout).trim()).ok())
        };
        let current = run_link("/run/current-system")?;
        let booted = run_link("/run/booted-system")?;
        let profile = std::fs::read_link(self.container.path("/nix/var/nix/profiles/system"))
            .ok()
            .and_then(|target| resolve_profile(self, &target));
        let boot_entry = std::fs::read_to_string(self.container.path("/boot/loader/default"))
            .ok()
            .and_then(|text| StorePath::parse(text.trim()).ok());
        let activate_units = self
            .container
            .run(&[
                "systemctl",
                "list-units",
                "--all",
                "--plain",
                "--no-legend",
                "fleetnode-activate-*",
            ])?
            .lines()
            .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
            .collect();
        let generation = self
            .container
            .output(&["systemctl", "is-active", GENERATION_UNIT])?;
        let served = self.container.output(&[
            "busybox",
            "wget",
            "-q",
            "-O",
            "-",
            "http://127.0.0.1:8080/health",
        ])?;
        Ok(HostState {
            current,
            booted,
            profile,
            boot_entry,
            activate_units,
            generation_unit: String::from_utf8_lossy(&generation.stdout)
                .trim()
                .to_owned(),
            served: served
                .status
                .success()
                .then(|| String::from_utf8_lossy(&served.stdout).trim().to_owned()),
        })
    }

    /// Every line of the switch log: `<closure> <action> started|finished ...`.
    pub fn switch_log(&self) -> Vec<String> {
        std::fs::read_to_string(self.container.path(SWITCH_LOG))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// How many times `closure`'s switch was started with `action`.
    pub fn switch_runs(&self, closure: &StorePath, action: &str) -> usize {
        let prefix = format!("{closure} {action} started");
        self.switch_log()
            .iter()
            .filter(|line| line.starts_with(&prefix))
            .count()
    }

    /// The end of the agent's journal.
    pub fn agent_journal(&mut self, lines: usize) -> String {
        let lines = lines.to_string();
        self.container
            .run(&[
                "journalctl",
                "--unit=fleetnode-agent.service",
                "--no-pager",
                "--lines",
                &lines,
            ])
            .unwrap_or_else(|e| e.to_string())
    }

    /// A failure report: the last state seen, the latest events, the host's real state, the
    /// agent's journal and the switch log.
    pub fn report(&mut self, last: Option<&HostDetail>) -> String {
        let mut out = String::new();
        match last {
            Some(detail) => {
                let _ = writeln!(
                    out,
                    "last state: phase {}, current {}, target {}, handled {:?}",
                    detail.row.phase,
                    narrate::short_or_none(detail.row.current.as_ref()),
                    narrate::short_or_none(detail.row.target.as_ref()),
                    detail.mirror.handled,
                );
                for event in &detail.recent_events {
                    let _ = writeln!(out, "  {}", narrate::describe(event));
                }
            }
            None => out.push_str("no state was read from the control plane\n"),
        }
        let _ = writeln!(out, "host: {:?}", self.state());
        let _ = writeln!(out, "switch log:\n{}", self.switch_log().join("\n"));
        let _ = writeln!(out, "agent journal:\n{}", self.agent_journal(60));
        let _ = write!(out, "files: {}", self.work.path().display());
        out
    }

    fn install(&mut self, options: &AgentOptions) -> Result<()> {
        let token_file = format!("{AGENT_DIR}/token");
        self.wait_for_cp()?;
        self.cp(&["add-host", HOST, "--token-file", &token_file])?;
        self.container.run(&["chmod", "0400", &token_file])?;
        let initial = self.build("nixos-system-real-01-gen-1", &Behaviour::Healthy)?;
        self.sign(&initial, Signer::Cache)?;
        self.container.bash(&format!(
            "nix-env --profile /nix/var/nix/profiles/system --set {initial}\n\
             {initial}/bin/switch-to-configuration switch\n\
             ln -sfn {initial} /run/booted-system"
        ))?;
        self.initial = initial;
        let config = agent_config(&self.trusted_key, options);
        put(
            &self.container.path(&format!("{AGENT_DIR}/agent.toml")),
            &config,
            0o600,
        )?;
        self.container
            .run(&["systemctl", "enable", "--now", "fleetnode-agent.service"])?;
        self.wait_for("the agent to report in, idle", |detail| {
            detail.row.phase.name() == "idle"
                && detail.mirror.seq > 0
                && detail.last_heartbeat.is_some()
        })?;
        Ok(())
    }

    fn wait_for_cp(&mut self) -> Result<()> {
        let started = Instant::now();
        loop {
            match self.cp(&["hosts"]) {
                Ok(_) => return Ok(()),
                Err(e) if started.elapsed() > DEADLINE => return Err(e),
                Err(_) => std::thread::sleep(POLL),
            }
        }
    }

    fn revision_of(&mut self, args: &[&str]) -> Result<Revision> {
        let mut with_json = args.to_vec();
        with_json.push("--json");
        let printed = self.cp(&with_json)?;
        let changed: DesiredChanged =
            serde_json::from_str(&printed).map_err(|e| HarnessError::Unreadable {
                command: format!("fleetnode-cp {}", args.join(" ")),
                message: e.to_string(),
                output: printed.clone(),
            })?;
        changed
            .hosts
            .iter()
            .find(|entry| entry.host.as_str() == HOST)
            .map(|entry| entry.revision)
            .ok_or_else(|| HarnessError::Unexpected {
                what: format!(
                    "`fleetnode-cp {}` did not change host {HOST}",
                    args.join(" ")
                ),
                report: printed,
            })
    }
}

/// What the host really runs, read from the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostState {
    /// `/run/current-system`.
    pub current: Option<StorePath>,
    /// `/run/booted-system`.
    pub booted: Option<StorePath>,
    /// The system profile's generation.
    pub profile: Option<StorePath>,
    /// The boot loader's default entry.
    pub boot_entry: Option<StorePath>,
    /// Every loaded `fleetnode-activate-*` unit.
    pub activate_units: Vec<String>,
    /// `systemctl is-active fleetnode-generation.service`.
    pub generation_unit: String,
    /// What the generation's service serves at `/health`, if it answers.
    pub served: Option<String>,
}

impl HostState {
    /// Whether the host runs `closure` committed: live, booted-into-next, in the profile, its
    /// service up and serving it, and no switch unit left behind.
    pub fn runs_committed(&self, closure: &StorePath) -> bool {
        self.current.as_ref() == Some(closure)
            && self.profile.as_ref() == Some(closure)
            && self.boot_entry.as_ref() == Some(closure)
            && self.generation_unit == "active"
            && self.serves(closure)
            && self.activate_units.is_empty()
    }

    /// Whether the generation's service answers for `closure`'s generation.
    pub fn serves(&self, closure: &StorePath) -> bool {
        let generation = closure.name();
        self.served.as_deref() == Some(&format!("healthy {generation}"))
    }
}

/// Lays the installation's files into the unpacked root before its first boot.
fn lay_out(root: &Path, name: &str) -> Result<()> {
    let at = |inside: &str| root.join(inside.trim_start_matches('/'));
    let copy_binary = |binary: &'static str| -> Result<()> {
        let from = binaries::locate(binary)?;
        let to = at(&format!("/usr/local/bin/{binary}"));
        std::fs::copy(&from, &to)
            .map(drop)
            .map_err(HarnessError::io(format!(
                "copy {} to {}",
                from.display(),
                to.display()
            )))
    };
    copy_binary(binaries::AGENT)?;
    copy_binary(binaries::CONTROL_PLANE)?;
    put(&at("/etc/hostname"), &format!("{name}\n"), 0o644)?;
    // debootstrap writes no /etc/hosts, and the control plane is reached as `localhost`.
    put(
        &at("/etc/hosts"),
        &format!("127.0.0.1 localhost\n::1 localhost\n127.0.1.1 {name}\n"),
        0o644,
    )?;
    put(
        &at("/etc/systemd/system/fleetnode-agent.service"),
        UNIT_AGENT,
        0o644,
    )?;
    put(
        &at("/etc/systemd/system/fleetnode-cp.service"),
        UNIT_CP,
        0o644,
    )?;
    let bootloader = "/etc/systemd/system/fleetnode-test-bootloader.service";
    put(&at(bootloader), BOOTLOADER_UNIT, 0o644)?;
    let wants = at("/etc/systemd/system/multi-user.target.wants");
    std::fs::create_dir_all(&wants).map_err(HarnessError::io("create multi-user.target.wants"))?;
    std::os::unix::fs::symlink(bootloader, wants.join("fleetnode-test-bootloader.service"))
        .map_err(HarnessError::io("enable the boot-loader stand-in"))?;
    let boot_entry = "/usr/local/lib/fleetnode-tests/boot-default-entry";
    put(&at(boot_entry), BOOT_DEFAULT_ENTRY, 0o755)?;
    for (file, text, mode) in [
        ("closure.nix", CLOSURE_NIX, 0o644),
        ("build-generation.sh", BUILD_GENERATION, 0o644),
        ("switch-to-configuration", SWITCH_SCRIPT, 0o644),
        ("activate", ACTIVATE_SCRIPT, 0o644),
        ("prepare-host", PREPARE_HOST, 0o755),
    ] {
        put(&at(&format!("{TESTS_DIR}/{file}")), text, mode)?;
    }
    std::fs::create_dir_all(at(CP_DIR)).map_err(HarnessError::io(format!("create {CP_DIR}")))?;
    let certs = || -> std::result::Result<_, fleetnode_fixtures::certs::CertError> {
        let ca = TestCa::new("fleetnode real-host CA")?;
        let ca_file = ca.write(&at(CP_DIR))?;
        let server = ca.server()?.write(&at(CP_DIR), "server")?;
        Ok((ca_file, server))
    };
    let (ca, server) =
        certs().map_err(|e| HarnessError::setup("the certificates")(e.to_string()))?;
    let rename = |from: &Path, to: &str| {
        std::fs::rename(from, at(to)).map_err(HarnessError::io(format!("move {to}")))
    };
    rename(&server.cert, &format!("{CP_DIR}/cert.pem"))?;
    rename(&server.key, &format!("{CP_DIR}/key.pem"))?;
    rename(&ca, &format!("{CP_DIR}/ca.pem"))?;
    let ca_text = std::fs::read_to_string(at(&format!("{CP_DIR}/ca.pem")))
        .map_err(HarnessError::io("read the CA certificate"))?;
    put(&at(&format!("{AGENT_DIR}/ca.pem")), &ca_text, 0o644)?;
    put(&at(&format!("{CP_DIR}/admin-token")), &random_hex()?, 0o600)?;
    Ok(())
}

/// The agent's `agent.toml`: the real programs on root `/`, the http probe of the
/// generation's service, the systemd probe of its unit, and an exec probe (a child process of
/// the agent, inside the agent's sandbox) that opens the service's port.
fn agent_config(trusted_key: &str, options: &AgentOptions) -> String {
    format!(
        r#"control_plane_url = "{CP_URL}"
host_id = "{HOST}"
token_credential = "token"
state_dir = "/var/lib/fleetnode"
log_format = "text"

[tls]
ca_file = "{AGENT_DIR}/ca.pem"

[activation]
mode = "{mode}"
timeout = "{timeout}"
rollback_timeout = "{timeout}"

[health]
soak = "{soak}"
sustained_failure = "2s"
on_failure = "rollback"

[reboot]
allow = {allow_reboot}

[heartbeat]
interval = "1s"

[system]
root = "/"
profile = "/nix/var/nix/profiles/system"
nix_store = "/usr/bin/nix-store"
nix_env = "/usr/bin/nix-env"
systemd_run = "/usr/bin/systemd-run"
systemctl = "/usr/bin/systemctl"
require_signatures = true
trusted_public_keys = ["{trusted_key}"]

[probes.web]
kind = "http"
url = "http://127.0.0.1:8080/health"
interval = "1s"
timeout = "2s"

[probes.service]
kind = "systemd"
unit = "{GENERATION_UNIT}"
interval = "1s"

[probes.port]
kind = "exec"
command = ["/bin/bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080"]
interval = "1s"
timeout = "2s"
"#,
        mode = options.mode,
        timeout = options.activation_timeout,
        soak = options.soak,
        allow_reboot = options.allow_reboot,
    )
}

/// Follows a profile link (`system` -> `system-<n>-link` -> store path) inside the root.
fn resolve_profile(host: &RealHost, target: &Path) -> Option<StorePath> {
    let mut target = target.to_owned();
    for _ in 0..4 {
        let text = target.to_string_lossy().into_owned();
        if let Ok(path) = StorePath::parse(&text) {
            return Some(path);
        }
        let next = if target.is_absolute() {
            host.container.path(&text)
        } else {
            host.container.path("/nix/var/nix/profiles").join(&target)
        };
        target = std::fs::read_link(next).ok()?;
    }
    None
}

/// Writes a file, creating its directory first.
fn put(path: &Path, contents: &str, mode: u32) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(HarnessError::io(format!("create {}", dir.display())))?;
    }
    crate::process::write_file(path, contents, mode)
}

fn store_path(text: &str) -> Result<StorePath> {
    StorePath::parse(text).map_err(|e| HarnessError::Unexpected {
        what: format!("expected a store path, got {text:?}: {e}"),
        report: String::new(),
    })
}

fn random_hex() -> Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| HarnessError::setup("a token")(e.to_string()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Runs `command`, failing with everything it printed when it exits non-zero.
pub(crate) fn run_checked(command: &mut Command) -> Result<String> {
    let shown = format!(
        "{} {}",
        command.get_program().to_string_lossy(),
        command
            .get_args()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let output = command
        .output()
        .map_err(HarnessError::io(format!("run `{shown}`")))?;
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    Err(describe_output(&shown, &output))
}

/// The error for a command that failed.
pub(crate) fn describe_output(command: &str, output: &Output) -> HarnessError {
    HarnessError::Command {
        command: command.to_owned(),
        status: output.status.to_string(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The directory the host lives in.
pub fn work_dir(host: &RealHost) -> PathBuf {
    host.work.path().to_owned()
}
