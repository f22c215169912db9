//! `NixosSystem` against a fake NixOS root: real commands, real files, real processes.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use fleetnode_fixtures::fakeroot::{Behaviour, FakeRoot, Signing};
use fleetnode_state_machine::{
    RealiseResult, StorePath, SwitchAction, SwitchExit, SwitchId, SwitchJob, SwitchPurpose,
    UnitState,
};

use super::{Launch, NixosSystem, System, unit_name};
use crate::config::SystemConfig;

/// The fixture returns the agent library's `SystemConfig`; this test build of the crate has its
/// own copy of the type.
pub(crate) fn config_of(fake: &FakeRoot) -> SystemConfig {
    let c = fake.system_config();
    SystemConfig {
        root: c.root,
        profile: c.profile,
        nix_store: c.nix_store,
        nix_env: c.nix_env,
        systemd_run: c.systemd_run,
        systemctl: c.systemctl,
        require_signatures: c.require_signatures,
        trusted_public_keys: c.trusted_public_keys,
    }
}

/// The event stream id of the store the tests' backends are bound to.
pub(crate) const STREAM: u64 = 0x5eed_0001;

pub(crate) fn system_for(fake: &FakeRoot) -> NixosSystem {
    bound(NixosSystem::new(config_of(fake), fake.state_dir()))
}

pub(crate) fn bound(system: NixosSystem) -> NixosSystem {
    system.bind_store(STREAM);
    system
}

pub(crate) fn job(
    closure: &StorePath,
    purpose: SwitchPurpose,
    action: SwitchAction,
    set_profile: bool,
) -> SwitchJob {
    SwitchJob {
        purpose,
        closure: closure.clone(),
        action,
        set_profile,
    }
}

/// Polls until the unit is no longer running (a guard, not a timing assertion: a unit that
/// never ends fails the test instead of hanging it).
pub(crate) async fn wait_until_ended(system: &NixosSystem, switch: SwitchId) -> UnitState {
    let started = Instant::now();
    loop {
        let state = system.switch_state(switch).await.unwrap();
        if state != UnitState::Running {
            return state;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "unit never ended"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One host with a committed generation `old` and a new closure `new`.
fn host() -> (FakeRoot, StorePath, StorePath) {
    let fake = FakeRoot::new();
    let old = fake.add_closure("nixos-system-web-01-24.05");
    let new = fake.add_closure("nixos-system-web-01-24.11");
    fake.set_current(&old);
    (fake, old, new)
}

async fn switch_to_end(system: &NixosSystem, switch: SwitchId, job: &SwitchJob) -> UnitState {
    system.start_switch(switch, job).await.unwrap();
    let state = wait_until_ended(system, switch).await;
    system.stop_switch(switch).await.unwrap();
    state
}

fn exit_code(state: &UnitState) -> Option<i32> {
    match state {
        UnitState::Exited(exit) => exit.code,
        UnitState::Running | UnitState::Gone => panic!("not exited: {state:?}"),
    }
}

fn commands(fake: &FakeRoot, program: &str) -> Vec<Vec<String>> {
    fake.command_log()
        .into_iter()
        .filter(|argv| argv[0] == program)
        .collect()
}

#[tokio::test]
async fn observe_reads_the_three_system_links() {
    let (fake, old, new) = host();
    let system = system_for(&fake);
    let view = system.observe().await.unwrap();
    assert_eq!(view.current, Some(old.clone()));
    assert_eq!(view.booted, Some(old.clone()));
    assert_eq!(view.profile, Some(old.clone()));

    fake.set_current(&new);
    let view = system.observe().await.unwrap();
    assert_eq!(view.profile, Some(new));
}

#[tokio::test]
async fn observe_reports_absent_links_and_refuses_non_store_targets() {
    let fake = FakeRoot::new();
    let system = system_for(&fake);
    let view = system.observe().await.unwrap();
    assert_eq!(view, Default::default());

    std::os::unix::fs::symlink("/etc/passwd", fake.root().join("run/current-system")).unwrap();
    let err = system.observe().await.unwrap_err().to_string();
    assert!(
        err.contains("current-system") && err.contains("/etc/passwd"),
        "{err}"
    );
}

#[tokio::test]
async fn boot_id_is_stable_within_a_boot_and_changes_with_a_reboot() {
    let (fake, _, _) = host();
    let system = system_for(&fake);
    let first = system.boot_id().await.unwrap().unwrap();
    assert_eq!(system.boot_id().await.unwrap().unwrap(), first);
    // A second agent process (a restart) sees the same boot.
    let restarted = system_for(&fake);
    assert_eq!(restarted.boot_id().await.unwrap().unwrap(), first);
    fake.simulate_reboot();
    let second = system.boot_id().await.unwrap().unwrap();
    assert_ne!(first, second);
}

#[tokio::test]
async fn a_reboot_is_seen_when_the_kernel_boot_id_does_not_change() {
    // In a container whose agent unit has ProtectKernelTunables=, /proc shows the machine's
    // boot id, which a container reboot does not change.
    let (fake, _, _) = host();
    let system = system_for(&fake);
    let kernel = fake.root().join("proc/sys/kernel/random/boot_id");
    let machine = std::fs::read_to_string(&kernel).unwrap();
    let first = system.boot_id().await.unwrap().unwrap();
    fake.simulate_reboot();
    std::fs::write(&kernel, &machine).unwrap();
    let second = system.boot_id().await.unwrap().unwrap();
    assert_ne!(first, second, "the reboot was not seen");
    assert!(fake.root().join("run/fleetnode/boot-id").exists());
}

#[tokio::test]
async fn realise_holds_a_gc_root_on_the_target() {
    let (fake, _, new) = host();
    let system = system_for(&fake);
    assert_eq!(system.realise(&new).await, RealiseResult::Realised);
    let root = fake.state_dir().join("gcroots/target");
    assert_eq!(std::fs::read_link(&root).unwrap(), Path::new(new.as_str()));
    assert_eq!(
        commands(&fake, "nix-store"),
        vec![vec![
            "nix-store".to_owned(),
            "--realise".to_owned(),
            new.to_string(),
            "--add-root".to_owned(),
            root.display().to_string(),
            "--indirect".to_owned(),
        ]]
    );
    // The next target replaces the root.
    let other = fake.add_closure("nixos-system-web-01-25.05");
    assert_eq!(system.realise(&other).await, RealiseResult::Realised);
    assert_eq!(
        std::fs::read_link(&root).unwrap(),
        Path::new(other.as_str())
    );
}

#[tokio::test]
async fn realise_fails_for_a_missing_closure_with_nix_s_message() {
    let (fake, _, new) = host();
    let system = system_for(&fake);
    let absent = fake.missing_closure("nixos-system-gone");
    let RealiseResult::Failed { message } = system.realise(&absent).await else {
        panic!("a missing closure was realised");
    };
    assert!(message.contains("no substituter"), "{message}");
    fake.mark_missing(&new);
    assert!(matches!(
        system.realise(&new).await,
        RealiseResult::Failed { .. }
    ));
}

#[tokio::test]
async fn realise_refuses_a_different_path_than_asked() {
    let (fake, old, new) = host();
    let system = system_for(&fake);
    fake.realise_yields(&new, &old);
    let RealiseResult::Failed { message } = system.realise(&new).await else {
        panic!("a mismatched realisation was accepted");
    };
    assert!(
        message.contains(old.as_str()) && message.contains(new.as_str()),
        "{message}"
    );
}

#[tokio::test]
async fn realise_checks_signatures_only_when_required() {
    let (fake, _, new) = host();
    fake.mark_unsigned(&new);
    let relaxed = system_for(&fake);
    assert_eq!(relaxed.realise(&new).await, RealiseResult::Realised);
    assert!(commands(&fake, "nix").is_empty());

    let mut config = config_of(&fake);
    config.require_signatures = true;
    let strict = bound(NixosSystem::new(config, fake.state_dir()));
    let RealiseResult::Failed { message } = strict.realise(&new).await else {
        panic!("an unsigned closure was accepted");
    };
    assert!(message.contains("not signed by a trusted key"), "{message}");
    assert!(message.contains("has no signature"), "{message}");

    let signed = fake.add_closure("nixos-system-signed");
    assert_eq!(strict.realise(&signed).await, RealiseResult::Realised);
    let listed = commands(&fake, "nix").pop().unwrap();
    assert_eq!(
        listed[1..],
        [
            "--extra-experimental-features",
            "nix-command",
            "path-info",
            "--json",
            "--recursive",
            signed.as_str(),
        ]
    );
}

#[tokio::test]
async fn required_signatures_refuse_forged_and_content_addressed_closures() {
    let (fake, _, _) = host();
    let mut config = config_of(&fake);
    config.require_signatures = true;
    let strict = bound(NixosSystem::new(config, fake.state_dir()));
    for (signing, expected) in [
        (Signing::Untrusted, "do not match its contents"),
        (Signing::ContentAddressedUnsigned, "content-addressed"),
    ] {
        let closure = fake.add_closure(&format!("nixos-system-{signing:?}").to_lowercase());
        fake.sign_as(&closure, signing);
        let RealiseResult::Failed { message } = strict.realise(&closure).await else {
            panic!("a closure signed as {signing:?} was accepted");
        };
        assert!(message.contains(expected), "{signing:?}: {message}");
    }
}

#[tokio::test]
async fn test_activation_touches_neither_profile_nor_boot_entry() {
    let (fake, old, new) = host();
    let system = system_for(&fake);
    let job = job(&new, SwitchPurpose::Activate, SwitchAction::Test, false);
    let state = switch_to_end(&system, SwitchId(1), &job).await;
    assert_eq!(exit_code(&state), Some(0));
    assert_eq!(fake.current(), Some(new.clone()));
    assert_eq!(fake.profile(), Some(old.clone()));
    assert_eq!(fake.boot_entry(), Some(old.clone()));
    assert!(commands(&fake, "nix-env").is_empty());
    assert_eq!(
        commands(&fake, "switch-to-configuration"),
        vec![vec![
            "switch-to-configuration".to_owned(),
            new.to_string(),
            "test".to_owned()
        ]]
    );
    // The unit was released after its result was read.
    assert_eq!(
        system.switch_state(SwitchId(1)).await.unwrap(),
        UnitState::Gone
    );
}

#[tokio::test]
async fn commit_sets_the_profile_then_installs_the_boot_entry() {
    let (fake, old, new) = host();
    let system = system_for(&fake);
    let test = job(&new, SwitchPurpose::Activate, SwitchAction::Test, false);
    switch_to_end(&system, SwitchId(1), &test).await;
    assert_eq!(fake.boot_entry(), Some(old.clone()));

    let commit = job(&new, SwitchPurpose::Commit, SwitchAction::Boot, true);
    let state = switch_to_end(&system, SwitchId(2), &commit).await;
    assert_eq!(exit_code(&state), Some(0));
    assert_eq!(fake.profile(), Some(new.clone()));
    assert_eq!(fake.boot_entry(), Some(new.clone()));
    assert_eq!(fake.current(), Some(new.clone()));
    assert_eq!(fake.booted(), Some(old.clone()));
    assert_eq!(
        fake.profile_generations().last().unwrap(),
        &(2, new.clone())
    );
    let env = commands(&fake, "nix-env");
    let profile = fake.host_path(fleetnode_fixtures::fakeroot::PROFILE);
    assert_eq!(
        env,
        vec![vec![
            "nix-env".to_owned(),
            "-p".to_owned(),
            profile.display().to_string(),
            "--set".to_owned(),
            new.to_string(),
        ]]
    );
}

#[tokio::test]
async fn switch_and_boot_jobs_do_what_their_action_says() {
    let (fake, old, new) = host();
    let system = system_for(&fake);
    let boot = job(&new, SwitchPurpose::Activate, SwitchAction::Boot, true);
    assert_eq!(
        exit_code(&switch_to_end(&system, SwitchId(1), &boot).await),
        Some(0)
    );
    assert_eq!(fake.current(), Some(old.clone()));
    assert_eq!(fake.profile(), Some(new.clone()));
    assert_eq!(fake.boot_entry(), Some(new.clone()));

    let newest = fake.add_closure("nixos-system-web-01-25.05");
    let switch = job(&newest, SwitchPurpose::Activate, SwitchAction::Switch, true);
    assert_eq!(
        exit_code(&switch_to_end(&system, SwitchId(2), &switch).await),
        Some(0)
    );
    assert_eq!(fake.current(), Some(newest.clone()));
    assert_eq!(fake.profile(), Some(newest.clone()));
    assert_eq!(fake.boot_entry(), Some(newest));
}

#[tokio::test]
async fn rollback_runs_the_rollback_target_s_own_script_and_restores_the_profile() {
    let (fake, old, new) = host();
    let system = system_for(&fake);
    let switch = job(&new, SwitchPurpose::Activate, SwitchAction::Switch, true);
    switch_to_end(&system, SwitchId(1), &switch).await;
    assert_eq!(fake.current(), Some(new.clone()));

    let rollback = job(&old, SwitchPurpose::Rollback, SwitchAction::Switch, true);
    assert_eq!(
        exit_code(&switch_to_end(&system, SwitchId(2), &rollback).await),
        Some(0)
    );
    assert_eq!(fake.current(), Some(old.clone()));
    assert_eq!(fake.profile(), Some(old.clone()));
    assert_eq!(fake.boot_entry(), Some(old.clone()));
    let scripts = commands(&fake, "switch-to-configuration");
    assert_eq!(scripts.last().unwrap()[1], old.to_string());
    let run = commands(&fake, "systemd-run").pop().unwrap();
    let program = fake
        .host_path(old.as_str())
        .join("bin/switch-to-configuration");
    assert_eq!(
        run[run.len() - 2..],
        [program.display().to_string(), "switch".to_owned()]
    );
}

#[tokio::test]
async fn the_switch_runs_in_a_transient_unit_with_data_only_on_argv() {
    let (fake, _, new) = host();
    let system = system_for(&fake);
    let switch = job(&new, SwitchPurpose::Activate, SwitchAction::Switch, true);
    switch_to_end(&system, SwitchId(42), &switch).await;
    let run = commands(&fake, "systemd-run");
    let nix_env = fake.bin_dir().join("nix-env");
    let profile = fake.host_path(fleetnode_fixtures::fakeroot::PROFILE);
    let script = fake
        .host_path(new.as_str())
        .join("bin/switch-to-configuration");
    let log = fake.state_dir().join("switches/42.log");
    let path = std::env::var("PATH").unwrap();
    assert_eq!(
        run,
        vec![vec![
            "systemd-run".to_owned(),
            format!("--unit={}", unit_name(STREAM, SwitchId(42))),
            format!(
                "--description=fleetnode switch 42 of store 000000005eed0001: switch of {}",
                new.name()
            ),
            "--property=Type=exec".to_owned(),
            "--property=RemainAfterExit=yes".to_owned(),
            "--property=TimeoutStopSec=10s".to_owned(),
            format!("--property=StandardOutput=append:{}", log.display()),
            format!(
                "--property=ExecStartPre={} -p {} --set {new}",
                nix_env.display(),
                profile.display()
            ),
            format!("--setenv=PATH={}:{path}", fake.bin_dir().display()),
            "--".to_owned(),
            script.display().to_string(),
            "switch".to_owned(),
        ]]
    );
    assert!(
        std::fs::read_to_string(log)
            .unwrap()
            .contains("activating the configuration")
    );
}

#[tokio::test]
async fn a_held_switch_lock_launches_nothing_until_it_is_released() {
    let (fake, _, new) = host();
    let system = system_for(&fake);
    std::fs::create_dir_all(fake.switch_lock_path().parent().unwrap()).unwrap();
    let lock = std::fs::File::create(fake.switch_lock_path()).unwrap();
    lock.lock().unwrap();

    let job = job(&new, SwitchPurpose::Activate, SwitchAction::Test, false);
    assert_eq!(
        system.start_switch(SwitchId(1), &job).await.unwrap(),
        Launch::LockHeld
    );
    assert!(commands(&fake, "systemd-run").is_empty());

    lock.unlock().unwrap();
    assert_eq!(
        system.start_switch(SwitchId(1), &job).await.unwrap(),
        Launch::Started
    );
    assert_eq!(
        exit_code(&wait_until_ended(&system, SwitchId(1)).await),
        Some(0)
    );
    assert_eq!(fake.current(), Some(new));
}

#[tokio::test]
async fn exit_4_is_reported_with_the_failed_units_while_the_system_switched() {
    let (fake, _, new) = host();
    fake.behaviour(&new, Behaviour::PartialFailure);
    let system = system_for(&fake);
    let state = switch_to_end(
        &system,
        SwitchId(1),
        &job(&new, SwitchPurpose::Activate, SwitchAction::Switch, true),
    )
    .await;
    let UnitState::Exited(SwitchExit {
        code: exit_code,
        output_tail,
    }) = state
    else {
        panic!("{state:?}");
    };
    assert_eq!(exit_code, Some(4));
    assert!(output_tail.contains("fake-broken.service"), "{output_tail}");
    assert_eq!(fake.current(), Some(new));
}

#[tokio::test]
async fn a_failure_carries_its_exit_code_and_capped_output_tail() {
    let (fake, old, new) = host();
    let noise = "x".repeat(10_000);
    fake.behaviour(
        &new,
        Behaviour::Fail {
            exit_code: 3,
            output: format!("{noise}\nerror: activation script failed\n"),
        },
    );
    let system = system_for(&fake);
    let state = switch_to_end(
        &system,
        SwitchId(1),
        &job(&new, SwitchPurpose::Activate, SwitchAction::Test, false),
    )
    .await;
    let UnitState::Exited(SwitchExit {
        code: exit_code,
        output_tail,
    }) = state
    else {
        panic!("{state:?}");
    };
    assert_eq!(exit_code, Some(3));
    assert!(
        output_tail.ends_with("error: activation script failed\n"),
        "{output_tail}"
    );
    assert!(output_tail.len() <= fleetnode_state_machine::OUTPUT_TAIL_CAP);
    assert_eq!(fake.current(), Some(old));
    assert_eq!(
        system.switch_state(SwitchId(1)).await.unwrap(),
        UnitState::Gone
    );
}

#[tokio::test]
async fn a_missing_switch_script_is_refused_before_launch() {
    let (fake, _, _) = host();
    let absent = fake.missing_closure("nixos-system-absent");
    let system = system_for(&fake);
    let err = system
        .start_switch(
            SwitchId(1),
            &job(&absent, SwitchPurpose::Activate, SwitchAction::Test, false),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("switch-to-configuration"), "{err}");
    assert!(commands(&fake, "systemd-run").is_empty());
}

#[tokio::test]
async fn switch_state_goes_from_running_to_exited() {
    let (fake, _, new) = host();
    fake.behaviour(&new, Behaviour::SucceedAfter(Duration::from_millis(700)));
    let system = system_for(&fake);
    assert_eq!(
        system.switch_state(SwitchId(5)).await.unwrap(),
        UnitState::Gone
    );
    let job = job(&new, SwitchPurpose::Activate, SwitchAction::Test, false);
    system.start_switch(SwitchId(5), &job).await.unwrap();
    assert_eq!(
        system.switch_state(SwitchId(5)).await.unwrap(),
        UnitState::Running
    );
    let UnitState::Exited(SwitchExit {
        code: exit_code,
        output_tail,
    }) = wait_until_ended(&system, SwitchId(5)).await
    else {
        panic!("the unit vanished");
    };
    assert_eq!(exit_code, Some(0));
    assert!(
        output_tail.contains("activating the configuration"),
        "{output_tail}"
    );
    // Starting the same switch again follows the existing unit instead of re-running it.
    system.start_switch(SwitchId(5), &job).await.unwrap();
    assert_eq!(commands(&fake, "systemd-run").len(), 1);
}

#[tokio::test]
async fn stop_switch_kills_a_hanging_switch_and_frees_the_lock() {
    let (fake, old, new) = host();
    fake.behaviour(&new, Behaviour::Hang);
    let system = system_for(&fake);
    let job = job(&new, SwitchPurpose::Activate, SwitchAction::Test, false);
    system.start_switch(SwitchId(9), &job).await.unwrap();
    assert_eq!(
        system.switch_state(SwitchId(9)).await.unwrap(),
        UnitState::Running
    );
    let props = fake
        .unit_properties(&unit_name(STREAM, SwitchId(9)))
        .unwrap();
    let pid: i32 = props
        .lines()
        .find_map(|line| line.strip_prefix("ExecMainPID="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(Path::new(&format!("/proc/{pid}")).exists());

    system.stop_switch(SwitchId(9)).await.unwrap();
    assert_eq!(
        system.switch_state(SwitchId(9)).await.unwrap(),
        UnitState::Gone
    );
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    assert_eq!(fake.current(), Some(old));
    let lock = std::fs::File::open(fake.switch_lock_path()).unwrap();
    lock.try_lock().unwrap();
    // Stopping a unit that is gone is not an error.
    system.stop_switch(SwitchId(9)).await.unwrap();
}

const LAUNCHER_ROOT: &str = "FLEETNODE_TEST_LAUNCHER_ROOT";
const LAUNCHER_CLOSURE: &str = "FLEETNODE_TEST_LAUNCHER_CLOSURE";
const LAUNCHED: &str = "fleetnode-test-launcher: switch launched";

/// A switch must outlive the agent that launched it (a switch that restarts the agent must not
/// die with it). This test re-runs its own binary as the launcher, kills the launcher's whole
/// process group right after the launch, and checks the switch still completes.
#[test]
fn a_switch_outlives_the_process_that_launched_it() {
    if let (Ok(root), Ok(closure)) = (
        std::env::var(LAUNCHER_ROOT),
        std::env::var(LAUNCHER_CLOSURE),
    ) {
        return act_as_launcher(&root, &closure);
    }
    let (fake, _, new) = host();
    fake.behaviour(&new, Behaviour::SucceedAfter(Duration::from_millis(800)));
    let mut launcher = std::process::Command::new(std::env::current_exe().unwrap());
    use std::os::unix::process::CommandExt;
    let mut launcher = launcher
        .args([
            "system::tests::a_switch_outlives_the_process_that_launched_it",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(LAUNCHER_ROOT, fake.root())
        .env(LAUNCHER_CLOSURE, new.as_str())
        .process_group(0)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(launcher.stdout.take().unwrap());
    let launched = stdout
        .lines()
        .map_while(Result::ok)
        .any(|line| line.contains(LAUNCHED));
    assert!(launched, "the launcher did not launch the switch");
    let killed = std::process::Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", launcher.id())])
        .status()
        .unwrap();
    assert!(killed.success());
    launcher.wait().unwrap();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let system = system_for(&fake);
    let state = runtime.block_on(wait_until_ended(&system, SwitchId(77)));
    assert_eq!(exit_code(&state), Some(0));
    assert_eq!(fake.current(), Some(new));
}

fn act_as_launcher(root: &str, closure: &str) {
    let fake = FakeRoot::attach(Path::new(root));
    let closure = StorePath::parse(closure).unwrap();
    let system = system_for(&fake);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let job = job(&closure, SwitchPurpose::Activate, SwitchAction::Test, false);
    runtime
        .block_on(system.start_switch(SwitchId(77), &job))
        .unwrap();
    println!("\n{LAUNCHED}");
    std::thread::sleep(Duration::from_secs(60));
}
