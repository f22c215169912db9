//! The switch unit against the fake systemd: names that survive a store reset, a unit this
//! store did not launch, `systemctl show` failing while systemd re-executes, a switch that
//! ignores SIGTERM, and the environment a switch gets.

use std::time::Duration;

use fleetnode_fixtures::fakeroot::{Behaviour, FakeRoot};
use fleetnode_state_machine::{SwitchAction, SwitchExit, SwitchId, SwitchPurpose, UnitState};

use super::tests::{STREAM, bound, config_of, job, system_for};
use super::{NixosSystem, System, SystemError, unit_name};

async fn wait_exited(system: &NixosSystem, switch: SwitchId) -> UnitState {
    for _ in 0..600 {
        let state = system.switch_state(switch).await.unwrap();
        if !matches!(state, UnitState::Running) {
            return state;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("switch {switch} did not end");
}

#[tokio::test]
async fn a_unit_left_by_an_older_store_is_not_taken_for_a_new_switch() {
    let fake = FakeRoot::new();
    let old = fake.add_closure("nixos-system-old");
    fake.set_current(&old);
    let failing = fake.add_closure("nixos-system-failing");
    fake.behaviour(
        &failing,
        Behaviour::Fail {
            exit_code: 3,
            output: "old failure\n".into(),
        },
    );
    let healthy = fake.add_closure("nixos-system-healthy");
    let switch = SwitchId(9);

    let before_reset = system_for(&fake);
    let failed = job(&failing, SwitchPurpose::Activate, SwitchAction::Test, false);
    before_reset.start_switch(switch, &failed).await.unwrap();
    assert!(matches!(
        wait_exited(&before_reset, switch).await,
        UnitState::Exited(SwitchExit { code: Some(3), .. })
    ));

    // The store is reset: a new stream, switch ids from the start again; the old unit stays.
    let after_reset = NixosSystem::new(config_of(&fake), fake.state_dir());
    after_reset.bind_store(STREAM + 1);
    let fresh = job(&healthy, SwitchPurpose::Activate, SwitchAction::Test, false);
    after_reset.start_switch(switch, &fresh).await.unwrap();
    let UnitState::Exited(SwitchExit {
        code: exit_code,
        output_tail,
    }) = wait_exited(&after_reset, switch).await
    else {
        panic!("the new switch's unit vanished");
    };
    assert_eq!(exit_code, Some(0), "{output_tail}");
    assert!(!output_tail.contains("old failure"), "{output_tail}");
    assert_eq!(fake.current(), Some(healthy));
    assert_eq!(fake.units().len(), 2, "{:?}", fake.units());
}

#[tokio::test]
async fn a_unit_with_the_switch_s_name_that_this_store_did_not_launch_is_refused() {
    let fake = FakeRoot::new();
    let new = fake.add_closure("nixos-system-new");
    let system = system_for(&fake);
    let unit = unit_name(STREAM, SwitchId(4));
    let started = std::process::Command::new(fake.bin_dir().join("systemd-run"))
        .args([
            &format!("--unit={unit}"),
            "--description=someone else's",
            "--setenv=PATH=/usr/bin:/bin",
            "--",
            "/bin/sleep",
            "30",
        ])
        .output()
        .unwrap();
    assert!(started.status.success(), "{started:?}");
    let err = system
        .start_switch(
            SwitchId(4),
            &job(&new, SwitchPurpose::Activate, SwitchAction::Test, false),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, SystemError::ForeignUnit { .. }), "{err}");
    assert!(err.to_string().contains("systemctl stop"), "{err}");
}

#[tokio::test]
async fn systemctl_show_failing_during_a_daemon_reexec_is_tried_again() {
    let fake = FakeRoot::new();
    let new = fake.add_closure("nixos-system-new");
    let system = system_for(&fake);
    fake.fail_shows(3);
    system
        .start_switch(
            SwitchId(5),
            &job(&new, SwitchPurpose::Activate, SwitchAction::Test, false),
        )
        .await
        .unwrap();
    fake.fail_shows(3);
    assert!(matches!(
        wait_exited(&system, SwitchId(5)).await,
        UnitState::Exited(SwitchExit { code: Some(0), .. })
    ));
}

#[tokio::test]
async fn the_switch_unit_bounds_its_stop_and_gets_systemd_s_environment() {
    let fake = FakeRoot::new();
    let new = fake.add_closure("nixos-system-new");
    let system = bound(NixosSystem::new(config_of(&fake), fake.state_dir()));
    system
        .start_switch(
            SwitchId(6),
            &job(&new, SwitchPurpose::Activate, SwitchAction::Test, false),
        )
        .await
        .unwrap();
    wait_exited(&system, SwitchId(6)).await;
    let unit_dir = fake
        .root()
        .join("run/fake-systemd")
        .join(unit_name(STREAM, SwitchId(6)));
    let config = std::fs::read_to_string(unit_dir.join("config")).unwrap();
    assert!(config.contains("TimeoutStopSec=10\n"), "{config}");
}
