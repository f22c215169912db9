//! Time as the state machine sees it: points in milliseconds on the agent's clock and spans.
//! No clock is read here; the caller passes `now`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A point in time in milliseconds, on the agent's clock (wall-anchored, never going backwards
/// within the state machine: see [`crate::State::clock`]).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(transparent)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// This time plus a span, saturating at the end of time.
    pub fn plus(self, span: Millis) -> Self {
        Self(self.0.saturating_add(span.0))
    }

    /// The span from `earlier` to this time (zero if `earlier` is later).
    pub fn since(self, earlier: Timestamp) -> Millis {
        Millis(self.0.saturating_sub(earlier.0))
    }
}

/// A span of time in milliseconds.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(transparent)]
pub struct Millis(pub u64);

impl Millis {
    /// A span of whole seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Self(secs.saturating_mul(1000))
    }

    /// Parses a span written for humans: `500ms`, `30s`, `5m`, `1h` or `1d` (a bare number is
    /// seconds). The error says what was expected.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let value: u64 = number
            .parse()
            .map_err(|_| format!("{text:?} is not a duration like 500ms, 30s, 5m or 1h"))?;
        let factor = match unit.trim() {
            "ms" => 1,
            "" | "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            other => {
                return Err(format!(
                    "unknown unit {other:?} in {text:?}; use ms, s, m, h or d"
                ));
            }
        };
        value
            .checked_mul(factor)
            .map(Self)
            .ok_or_else(|| format!("{text:?} is too long"))
    }
}

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0;
        if !ms.is_multiple_of(1000) {
            write!(f, "{ms}ms")
        } else if !ms.is_multiple_of(60_000) {
            write!(f, "{}s", ms / 1000)
        } else if !ms.is_multiple_of(3_600_000) {
            write!(f, "{}m", ms / 60_000)
        } else {
            write!(f, "{}h", ms / 3_600_000)
        }
    }
}

impl fmt::Display for Timestamp {
    /// UTC, to the second: `2024-06-01 12:00:05Z`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0 / 1000;
        // u64::MAX milliseconds are under 2^38 days: the cast cannot wrap.
        let days = (secs / 86_400) as i64;
        let rest = secs % 86_400;
        let (year, month, day) = civil_from_days(days);
        write!(
            f,
            "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}Z",
            rest / 3600,
            (rest % 3600) / 60,
            rest % 60
        )
    }
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's civil-from-days).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let month = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_day_from_1970_to_2600_has_its_calendar_date() {
        // An independent oracle: walk the calendar day by day.
        let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let (mut year, mut month, mut day) = (1970i64, 1u32, 1u32);
        for days in 0..231_000i64 {
            assert_eq!(civil_from_days(days), (year, month, day), "day {days}");
            let length = match month {
                2 if leap(year) => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            day += 1;
            if day > length {
                day = 1;
                month += 1;
                if month > 12 {
                    month = 1;
                    year += 1;
                }
            }
        }
        assert!(year > 2600);
    }

    #[test]
    fn timestamps_display_as_utc_dates() {
        assert_eq!(Timestamp(0).to_string(), "1970-01-01 00:00:00Z");
        assert_eq!(
            Timestamp(1_700_000_000_000).to_string(),
            "2023-11-14 22:13:20Z"
        );
        assert_eq!(
            Timestamp(951_782_400_000).to_string(),
            "2000-02-29 00:00:00Z"
        );
    }

    #[test]
    fn time_arithmetic_saturates() {
        assert_eq!(Timestamp(u64::MAX).plus(Millis(5)), Timestamp(u64::MAX));
        assert_eq!(Timestamp(5).since(Timestamp(9)), Millis(0));
        assert_eq!(Timestamp(9).since(Timestamp(5)), Millis(4));
        assert_eq!(Millis::from_secs(3), Millis(3000));
    }

    #[test]
    fn spans_parse_from_human_text() {
        assert_eq!(Millis::parse("500ms"), Ok(Millis(500)));
        assert_eq!(Millis::parse("30s"), Ok(Millis(30_000)));
        assert_eq!(Millis::parse(" 30 "), Ok(Millis(30_000)));
        assert_eq!(Millis::parse("5m"), Ok(Millis(300_000)));
        assert_eq!(Millis::parse("2h"), Ok(Millis(7_200_000)));
        assert_eq!(Millis::parse("1d"), Ok(Millis(86_400_000)));
        for bad in ["", "m", "5 minutes", "5w", "-1s", "99999999999999999h"] {
            assert!(Millis::parse(bad).is_err(), "{bad}");
        }
        // What Display prints, parse reads back.
        for ms in [1500, 30_000, 300_000, 7_200_000] {
            assert_eq!(Millis::parse(&Millis(ms).to_string()), Ok(Millis(ms)));
        }
    }

    #[test]
    fn millis_display_uses_the_largest_whole_unit() {
        assert_eq!(Millis(1500).to_string(), "1500ms");
        assert_eq!(Millis(30_000).to_string(), "30s");
        assert_eq!(Millis(300_000).to_string(), "5m");
        assert_eq!(Millis(7_200_000).to_string(), "2h");
    }
}
