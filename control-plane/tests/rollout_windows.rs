//! Maintenance windows, rule by rule, and in the rollout state machine: the text operators write, the edges of a window, windows
//! across midnight and around the week, and the two nights a year daylight saving moves the
//! clocks (Europe/Berlin in 2026: 29 March, 02:00 CET becomes 03:00 CEST; 25 October, 03:00
//! CEST becomes 02:00 CET).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod rollout_support;

use fleetnode_control_plane::rollout::window::{Availability, Window, WindowError, availability};
use fleetnode_control_plane::rollout::{Deadline, Event, next_deadline, step};
use fleetnode_wire::{HostState, RolloutPhase, Timestamp};
use rollout_support::*;

/// The instant of a UTC wall-clock time.
fn utc(year: i16, month: i8, day: i8, hour: i8, minute: i8) -> Timestamp {
    let local = jiff::civil::date(year, month, day).at(hour, minute, 0, 0);
    let at = jiff::tz::TimeZone::UTC.to_timestamp(local).unwrap();
    Timestamp(u64::try_from(at.as_millisecond()).unwrap())
}

fn before(at: Timestamp) -> Timestamp {
    Timestamp(at.0 - 1)
}

fn window(text: &str) -> Window {
    Window::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

#[test]
fn the_text_is_days_times_and_a_zone() {
    assert_eq!(
        window("Sat 02:00-04:00 Europe/Berlin").to_string(),
        "Sat 02:00-04:00 Europe/Berlin"
    );
    assert_eq!(
        window("  mon-FRI   22:00-01:00   UTC ").to_string(),
        "mon-FRI 22:00-01:00 UTC"
    );
    for ok in [
        "daily 00:00-24:00 UTC",
        "Sat,Sun 10:00-11:30 UTC",
        "Fri-Mon,Wed 23:00-00:30 UTC",
    ] {
        window(ok);
    }
    let refused = |text: &str| Window::parse(text).unwrap_err();
    assert!(matches!(refused("Sat 02:00-04:00"), WindowError::Shape(_)));
    assert!(matches!(
        refused("Sat 02:00 - 04:00 UTC"),
        WindowError::Shape(_)
    ));
    assert!(matches!(
        refused("Sunday 02:00-04:00 UTC"),
        WindowError::Days { .. }
    ));
    assert!(matches!(
        refused("Mon-Xyz 02:00-04:00 UTC"),
        WindowError::Days { .. }
    ));
    assert!(matches!(
        refused("Mon,,Tue 02:00-04:00 UTC"),
        WindowError::Days { .. }
    ));
    for times in [
        "2:00-04:00",
        "02:00-04:60",
        "02:00-24:01",
        "24:00-02:00",
        "02:00",
        "aa:bb-cc:dd",
    ] {
        let text = format!("Sat {times} UTC");
        assert!(
            matches!(refused(&text), WindowError::Times { .. }),
            "{text}"
        );
    }
    assert!(matches!(
        refused("Sat 03:00-03:00 UTC"),
        WindowError::Empty(_)
    ));
    let error = refused("Sat 02:00-04:00 Mars/Olympus_Mons");
    assert!(matches!(error, WindowError::Zone { .. }));
    let message = error.to_string();
    assert!(
        message.contains("Mars/Olympus_Mons") && message.contains("IANA"),
        "{message}"
    );
}

#[test]
fn a_window_opens_at_its_start_and_closes_at_its_end() {
    // Saturday 5 December 2026.
    let w = window("Sat 02:00-04:00 UTC");
    let open = utc(2026, 12, 5, 2, 0);
    let close = utc(2026, 12, 5, 4, 0);
    assert_eq!(w.closes_after(before(open)), None);
    assert_eq!(w.opens_after(before(open)), Some(open));
    assert_eq!(w.closes_after(open), Some(close));
    assert_eq!(w.closes_after(before(close)), Some(close));
    assert_eq!(w.closes_after(close), None);
    assert_eq!(
        w.opens_after(close),
        Some(utc(2026, 12, 12, 2, 0)),
        "a week later"
    );
    assert_eq!(
        w.opens_after(open),
        Some(utc(2026, 12, 12, 2, 0)),
        "open now does not count"
    );
}

#[test]
fn a_window_may_cross_midnight_and_the_end_of_the_week() {
    let w = window("Sun 23:00-01:00 UTC");
    // Sunday 6 December 23:00 to Monday 7 December 01:00.
    assert_eq!(
        w.closes_after(utc(2026, 12, 7, 0, 30)),
        Some(utc(2026, 12, 7, 1, 0))
    );
    assert_eq!(w.closes_after(utc(2026, 12, 7, 1, 0)), None);
    assert_eq!(
        w.opens_after(utc(2026, 12, 7, 1, 0)),
        Some(utc(2026, 12, 13, 23, 0))
    );

    let weekend = window("Fri-Mon 10:00-11:00 UTC");
    for (day, open) in [
        (4, true),
        (5, true),
        (6, true),
        (7, true),
        (8, false),
        (9, false),
        (10, false),
    ] {
        let at = utc(2026, 12, day, 10, 30);
        assert_eq!(weekend.closes_after(at).is_some(), open, "December {day}");
    }
    let always = window("daily 00:00-24:00 UTC");
    assert_eq!(
        always.closes_after(utc(2026, 12, 9, 23, 59)),
        Some(utc(2026, 12, 10, 0, 0))
    );
    assert_eq!(
        always.closes_after(utc(2026, 12, 10, 0, 0)),
        Some(utc(2026, 12, 11, 0, 0))
    );
}

#[test]
fn local_time_follows_the_zone_and_its_daylight_saving() {
    // 02:00-04:00 in Berlin is 01:00-03:00 UTC in winter and 00:00-02:00 UTC in summer.
    let w = window("Sun 02:00-04:00 Europe/Berlin");
    assert_eq!(
        w.opens_after(utc(2026, 12, 1, 0, 0)),
        Some(utc(2026, 12, 6, 1, 0))
    );
    assert_eq!(
        w.opens_after(utc(2026, 7, 1, 0, 0)),
        Some(utc(2026, 7, 5, 0, 0))
    );
}

#[test]
fn in_spring_a_window_in_the_skipped_hour_starts_when_the_clocks_resume() {
    // On 29 March local 02:00-03:00 does not exist: the window opens at 03:00 CEST (01:00 UTC)
    // and closes at 04:00 CEST (02:00 UTC), one hour instead of two.
    let w = window("Sun 02:00-04:00 Europe/Berlin");
    let before_night = utc(2026, 3, 28, 12, 0);
    assert_eq!(w.opens_after(before_night), Some(utc(2026, 3, 29, 1, 0)));
    assert_eq!(
        w.closes_after(utc(2026, 3, 29, 0, 59)),
        None,
        "01:59 CET: not yet"
    );
    assert_eq!(
        w.closes_after(utc(2026, 3, 29, 1, 0)),
        Some(utc(2026, 3, 29, 2, 0))
    );
    assert_eq!(w.closes_after(utc(2026, 3, 29, 2, 0)), None);

    // A window entirely inside the skipped hour has no time that night: the next is a week on.
    let skipped = window("Sun 02:00-03:00 Europe/Berlin");
    assert_eq!(
        skipped.opens_after(before_night),
        Some(utc(2026, 4, 5, 0, 0))
    );
    assert_eq!(
        availability(&[skipped], utc(2026, 3, 29, 1, 0)),
        Availability::Closed {
            opens_at: Some(utc(2026, 4, 5, 0, 0)),
        }
    );
}

#[test]
fn in_autumn_a_window_over_the_repeated_hour_lasts_an_hour_longer() {
    // On 25 October local 02:00-03:00 happens twice: the window opens at the first 02:00
    // (CEST, 00:00 UTC) and closes at 04:00 CET (03:00 UTC), three hours.
    let w = window("Sun 02:00-04:00 Europe/Berlin");
    assert_eq!(
        w.opens_after(utc(2026, 10, 24, 12, 0)),
        Some(utc(2026, 10, 25, 0, 0))
    );
    for inside in [
        utc(2026, 10, 25, 0, 0),
        utc(2026, 10, 25, 1, 30),
        utc(2026, 10, 25, 2, 59),
    ] {
        assert_eq!(w.closes_after(inside), Some(utc(2026, 10, 25, 3, 0)));
    }
    assert_eq!(w.closes_after(utc(2026, 10, 25, 3, 0)), None);
}

#[test]
fn a_host_is_open_in_any_of_its_windows_and_always_without_one() {
    let at = utc(2026, 12, 9, 12, 0); // a Wednesday
    assert_eq!(availability(&[], at), Availability::Open);
    let saturday = window("Sat 02:00-04:00 UTC");
    let wednesday = window("Wed 11:00-13:00 UTC");
    let thursday = window("Thu 01:00-02:00 UTC");
    assert_eq!(
        availability(&[saturday.clone(), wednesday], at),
        Availability::Open
    );
    assert_eq!(
        availability(&[saturday, thursday], at),
        Availability::Closed {
            opens_at: Some(utc(2026, 12, 10, 1, 0))
        },
        "the earliest opening of its windows"
    );
}

/// START is Tuesday 14 November 2023, 22:13:20 UTC; the window below opens 1 h 46 min 40 s
/// later, at midnight.
const OPENS_IN: u64 = 6_400_000;

#[test]
fn a_wave_gives_a_host_the_release_only_inside_its_window() {
    let mut world = World::new(&[Fate::Converge(1_000); 2], 0);
    let waiting = host(2);
    world.hosts.get_mut(&waiting).unwrap().windows = vec![window("Wed 00:00-01:00 UTC")];
    let opens = START.plus(fleetnode_wire::Millis(OPENS_IN));

    // The host without a window gets the release at once; the other waits, saying until when.
    // (The offline deadline is longer than the wait, so the next deadline is the window's.)
    let mut setup = setup(vec![percent(100)]);
    setup.offline_deadline = 3 * OPENS_IN;
    let rollout = setup.start(&world);
    let (rollout, commands) = observe_step(&rollout, &mut world);
    assert_eq!(assigned(&commands), ["web-01"]);
    let progress = &rollout.hosts[&waiting];
    assert_eq!(progress.state, HostState::Pending);
    assert_eq!(progress.window_opens_at, Some(opens));

    // The first host converges and the wave still waits for the second: nothing completes,
    // nothing is sent, and the machine asks to be looked at when the window opens.
    world.advance(2_000);
    let (rollout, commands) = observe_step(&rollout, &mut world);
    assert!(commands.is_empty(), "{commands:?}");
    assert!(
        matches!(rollout.phase, RolloutPhase::Running(_)),
        "{:?}",
        rollout.phase
    );
    assert_eq!(
        next_deadline(&rollout, &world.observe()),
        Some((
            opens,
            Deadline::WindowOpens {
                host: waiting.clone()
            }
        ))
    );
    world.advance(OPENS_IN - 2_001);
    let (rollout, commands) = observe_step(&rollout, &mut world);
    assert!(
        commands.is_empty(),
        "a millisecond before the window: {commands:?}"
    );

    // At the opening it gets the release, and the wait is over.
    world.advance(1);
    let (rollout, commands) = observe_step(&rollout, &mut world);
    assert_eq!(assigned(&commands), ["web-02"]);
    assert_eq!(rollout.hosts[&waiting].window_opens_at, None);
    assert!(matches!(
        rollout.hosts[&waiting].state,
        HostState::InFlight { .. }
    ));
    let rollout = run_until_settled(rollout, &mut world, 500, 100);
    assert!(
        matches!(rollout.phase, RolloutPhase::Completed(_)),
        "{:?}",
        rollout.phase
    );
}

#[test]
fn a_rollout_that_stops_running_forgets_its_window_waits() {
    let mut world = World::new(&[Fate::Converge(1_000); 2], 0);
    world.hosts.get_mut(&host(2)).unwrap().windows = vec![window("Wed 00:00-01:00 UTC")];
    let rollout = setup(vec![percent(100)]).start(&world);
    let (rollout, _) = observe_step(&rollout, &mut world);
    assert!(rollout.hosts[&host(2)].window_opens_at.is_some());

    let (paused, _) = step(&rollout, Event::PauseRequested, world.now).unwrap();
    assert_eq!(paused.hosts[&host(2)].window_opens_at, None);
    assert!(
        !matches!(
            next_deadline(&paused, &world.observe()),
            Some((_, Deadline::WindowOpens { .. }))
        ),
        "a paused rollout waits for no window"
    );
    // Resumed, the wait is worked out again at the next observation.
    let (resumed, _) = step(&paused, Event::ResumeRequested, world.now).unwrap();
    let (resumed, commands) = observe_step(&resumed, &mut world);
    assert!(assigned(&commands).is_empty());
    assert!(resumed.hosts[&host(2)].window_opens_at.is_some());
    let (aborted, _) = step(&resumed, Event::AbortRequested, world.now).unwrap();
    assert_eq!(aborted.hosts[&host(2)].window_opens_at, None);
}
