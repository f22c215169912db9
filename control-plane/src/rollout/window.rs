//! Maintenance windows: when a rollout may start switching a host.
//!
//! A window is written `DAYS HH:MM-HH:MM ZONE`, for example `Sat 02:00-04:00 Europe/Berlin`,
//! `Mon-Fri 22:00-01:00 UTC` (an end before the start is on the next day) or `daily
//! 03:00-04:00 America/New_York`. DAYS is `daily`, a day (`Mon` ... `Sun`), a range of days
//! (`Mon-Fri`, `Fri-Mon`) or a comma-separated list of those. ZONE is an IANA time-zone name,
//! read from the system's time-zone database (`TZDIR`, else `/usr/share/zoneinfo`).
//!
//! A window opens on each of its days at its start in local time and closes at its end. Local
//! times are turned into instants as clocks read them across a daylight-saving change: a start
//! or end that falls in the hour skipped in spring is moved forward by that hour (a window
//! `02:00-04:00` on that night opens at 03:00 and lasts one hour), and one that falls in the
//! hour repeated in autumn is its first occurrence (the same window lasts three hours that
//! night). A night on which a window has no time left at all is skipped.
//!
//! Pure: no clock; every question takes the instant it is asked about.

use std::collections::BTreeMap;
use std::fmt;

use fleetnode_wire::{Tag, Timestamp};
use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;

/// Days a window occurrence may have started on before the day asked about: one, for a window
/// that crosses midnight.
const LOOK_BACK_DAYS: i64 = 1;
/// Days ahead searched for a next opening: every weekday occurs within a week, and a skipped
/// night (daylight saving) moves the opening by at most one more week.
const LOOK_AHEAD_DAYS: i64 = 15;

/// One recurring maintenance window.
#[derive(Debug, Clone)]
pub struct Window {
    /// What the operator wrote, normalised (days, times and zone as parsed).
    spec: String,
    /// Days it opens on, Monday first.
    days: [bool; 7],
    /// Opening and closing local time, in minutes after midnight (the end may be 24:00); an
    /// end before the start is on the next day.
    start: u16,
    end: u16,
    zone: TimeZone,
}

/// Why a window's text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    /// Not three parts.
    #[error(
        "maintenance window `{0}` is not `DAYS HH:MM-HH:MM ZONE` (for example `Sat 02:00-04:00 Europe/Berlin`)"
    )]
    Shape(String),
    /// A day that is not `Mon` ... `Sun`, a range or `daily`.
    #[error(
        "maintenance window `{spec}`: `{days}` is not a day list (write `daily`, `Sat`, `Mon-Fri` or `Sat,Sun`)"
    )]
    Days {
        /// The window as written.
        spec: String,
        /// The day part.
        days: String,
    },
    /// A time that is not `HH:MM`.
    #[error(
        "maintenance window `{spec}`: `{times}` is not a time range `HH:MM-HH:MM` (00:00 to 24:00)"
    )]
    Times {
        /// The window as written.
        spec: String,
        /// The time part.
        times: String,
    },
    /// Start and end are the same time.
    #[error("maintenance window `{0}` opens and closes at the same time; give it a length")]
    Empty(String),
    /// A zone the time-zone database does not know.
    #[error(
        "maintenance window `{spec}`: unknown time zone `{zone}` ({reason}); use an IANA name such as `Europe/Berlin` or `UTC`"
    )]
    Zone {
        /// The window as written.
        spec: String,
        /// The zone as written.
        zone: String,
        /// What the time-zone database said.
        reason: String,
    },
}

/// Whether a host may be switched now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    /// Inside a window, or the host has none.
    Open,
    /// Outside every window; the next opens then (`None`: none opens within two weeks, which
    /// only a window skipped by daylight saving on every one of its days can cause).
    Closed {
        /// When the next window opens.
        opens_at: Option<Timestamp>,
    },
}

impl Window {
    /// Parses `DAYS HH:MM-HH:MM ZONE`.
    pub fn parse(text: &str) -> Result<Self, WindowError> {
        let parts: Vec<&str> = text.split_whitespace().collect();
        let [days, times, zone] = parts.as_slice() else {
            return Err(WindowError::Shape(text.to_owned()));
        };
        let days_set = parse_days(days).ok_or_else(|| WindowError::Days {
            spec: text.to_owned(),
            days: (*days).to_owned(),
        })?;
        let (start, end) = parse_times(times).ok_or_else(|| WindowError::Times {
            spec: text.to_owned(),
            times: (*times).to_owned(),
        })?;
        if start == end {
            return Err(WindowError::Empty(text.to_owned()));
        }
        let zone_found = TimeZone::get(zone).map_err(|e| WindowError::Zone {
            spec: text.to_owned(),
            zone: (*zone).to_owned(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            spec: format!("{days} {times} {zone}"),
            days: days_set,
            start,
            end,
            zone: zone_found,
        })
    }

    /// Whether the window is open at `at`, and until when.
    pub fn closes_after(&self, at: Timestamp) -> Option<Timestamp> {
        let today = self.local_date(at)?;
        (-LOOK_BACK_DAYS..=0)
            .filter_map(|offset| today.checked_add(jiff::Span::new().days(offset)).ok())
            .filter_map(|day| self.occurrence(day))
            .find(|(open, close)| *open <= at && at < *close)
            .map(|(_, close)| close)
    }

    /// The first opening after `at` (an occurrence that is open at `at` does not count).
    pub fn opens_after(&self, at: Timestamp) -> Option<Timestamp> {
        let today = self.local_date(at)?;
        (-LOOK_BACK_DAYS..=LOOK_AHEAD_DAYS)
            .filter_map(|offset| today.checked_add(jiff::Span::new().days(offset)).ok())
            .filter_map(|day| self.occurrence(day))
            .map(|(open, _)| open)
            .find(|open| *open > at)
    }

    /// The window's occurrence that opens on local `day`, as instants, if it opens that day
    /// and has any time left after daylight saving.
    fn occurrence(&self, day: Date) -> Option<(Timestamp, Timestamp)> {
        if !self.days[usize::from(day.weekday().to_monday_zero_offset().unsigned_abs())] {
            return None;
        }
        let open = self.instant(day, self.start)?;
        let close_day = if self.end < self.start {
            day.tomorrow().ok()?
        } else {
            day
        };
        let close = self.instant(close_day, self.end)?;
        (open < close).then_some((open, close))
    }

    /// Local `minutes` after midnight of `day` as an instant (24:00 is the next midnight).
    fn instant(&self, day: Date, minutes: u16) -> Option<Timestamp> {
        let (day, minutes) = if minutes == MINUTES_PER_DAY {
            (day.tomorrow().ok()?, 0)
        } else {
            (day, minutes)
        };
        let hour = i8::try_from(minutes / 60).ok()?;
        let minute = i8::try_from(minutes % 60).ok()?;
        let local = DateTime::new(day.year(), day.month(), day.day(), hour, minute, 0, 0).ok()?;
        let instant = self.zone.to_timestamp(local).ok()?;
        u64::try_from(instant.as_millisecond()).ok().map(Timestamp)
    }

    /// The local date at `at` in the window's zone.
    fn local_date(&self, at: Timestamp) -> Option<Date> {
        let millis = i64::try_from(at.0).ok()?;
        let instant = jiff::Timestamp::from_millisecond(millis).ok()?;
        Some(self.zone.to_datetime(instant).date())
    }
}

impl PartialEq for Window {
    fn eq(&self, other: &Self) -> bool {
        self.spec == other.spec
    }
}

impl Eq for Window {}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.spec)
    }
}

/// The windows of every tag that has some, as the control plane was configured.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TagWindows {
    by_tag: BTreeMap<Tag, Vec<Window>>,
}

/// Why a windows file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TagWindowsError {
    /// Not TOML of the documented shape.
    #[error("not a maintenance windows file: {0}")]
    Shape(String),
    /// A key that is not a tag.
    #[error("`{tag}` is not a host tag: {reason}")]
    Tag {
        /// The key as written.
        tag: String,
        /// Why it is not a tag.
        reason: String,
    },
    /// A window that does not parse.
    #[error(transparent)]
    Window(#[from] WindowError),
}

/// The file's shape: `[windows]` with one list of windows per tag.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TagWindowsFile {
    #[serde(default)]
    windows: BTreeMap<String, Vec<String>>,
}

impl TagWindows {
    /// Reads the TOML text of a windows file:
    ///
    /// ```toml
    /// [windows]
    /// web = ["Sat 02:00-04:00 Europe/Berlin", "Wed 22:00-23:00 Europe/Berlin"]
    /// db = ["Sun 03:00-05:00 UTC"]
    /// ```
    pub fn from_toml(text: &str) -> Result<Self, TagWindowsError> {
        let file: TagWindowsFile =
            toml::from_str(text).map_err(|e| TagWindowsError::Shape(e.to_string()))?;
        let mut by_tag = BTreeMap::new();
        for (name, specs) in file.windows {
            let tag = Tag::parse(&name).map_err(|e| TagWindowsError::Tag {
                tag: name.clone(),
                reason: e.to_string(),
            })?;
            let windows = specs
                .iter()
                .map(|spec| Window::parse(spec))
                .collect::<Result<Vec<_>, _>>()?;
            if !windows.is_empty() {
                by_tag.insert(tag, windows);
            }
        }
        Ok(Self { by_tag })
    }

    /// The windows of a host with these tags: every window of every one of its tags.
    pub fn for_tags(&self, tags: &[Tag]) -> Vec<Window> {
        tags.iter()
            .filter_map(|tag| self.by_tag.get(tag))
            .flatten()
            .cloned()
            .collect()
    }

    /// Every tag with windows, with its windows.
    pub fn iter(&self) -> impl Iterator<Item = (&Tag, &[Window])> {
        self.by_tag
            .iter()
            .map(|(tag, windows)| (tag, windows.as_slice()))
    }

    /// Whether no tag has a window.
    pub fn is_empty(&self) -> bool {
        self.by_tag.is_empty()
    }
}

/// Whether a host whose windows are `windows` may be switched at `at`: open inside any of
/// them, and always when it has none.
pub fn availability(windows: &[Window], at: Timestamp) -> Availability {
    if windows.is_empty() || windows.iter().any(|w| w.closes_after(at).is_some()) {
        return Availability::Open;
    }
    Availability::Closed {
        opens_at: windows.iter().filter_map(|w| w.opens_after(at)).min(),
    }
}

const MINUTES_PER_DAY: u16 = 24 * 60;

/// Day names, Monday first (as `jiff::civil::Weekday::to_monday_zero_offset` counts).
const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// `daily`, or a comma-separated list of days and day ranges (a range may wrap past Sunday).
fn parse_days(text: &str) -> Option<[bool; 7]> {
    let text = text.to_ascii_lowercase();
    if text == "daily" {
        return Some([true; 7]);
    }
    let mut days = [false; 7];
    for item in text.split(',') {
        let (first, last) = match item.split_once('-') {
            Some((first, last)) => (day_index(first)?, day_index(last)?),
            None => (day_index(item)?, day_index(item)?),
        };
        let mut day = first;
        loop {
            days[day] = true;
            if day == last {
                break;
            }
            day = (day + 1) % 7;
        }
    }
    Some(days)
}

fn day_index(name: &str) -> Option<usize> {
    DAY_NAMES.iter().position(|short| *short == name)
}

/// `HH:MM-HH:MM` as minutes after midnight (00:00 to 24:00).
fn parse_times(text: &str) -> Option<(u16, u16)> {
    let (start, end) = text.split_once('-')?;
    let start = parse_time(start).filter(|start| *start < MINUTES_PER_DAY)?;
    Some((start, parse_time(end)?))
}

fn parse_time(text: &str) -> Option<u16> {
    let (hours, minutes) = text.split_once(':')?;
    if hours.len() != 2 || minutes.len() != 2 {
        return None;
    }
    let hours: u16 = hours.parse().ok()?;
    let minutes: u16 = minutes.parse().ok()?;
    let total = hours * 60 + minutes;
    (minutes < 60 && total <= MINUTES_PER_DAY).then_some(total)
}
