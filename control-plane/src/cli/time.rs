//! Times for people: "12s ago" and UTC dates, without a calendar library.

use fleetnode_wire::Timestamp;

/// `now - then` as "12s ago", "5m ago", "3h ago", "2d ago" ("in the future" on clock skew).
pub fn ago(then: Timestamp, now: Timestamp) -> String {
    if then > now {
        return "just now".to_owned();
    }
    let secs = (now.0 - then.0) / 1000;
    match secs {
        0..60 => format!("{secs}s ago"),
        60..3600 => format!("{}m ago", secs / 60),
        3600..86_400 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

/// `2024-06-01 12:00:05Z`.
pub fn utc(at: Timestamp) -> String {
    let secs = at.0 / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rest = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}Z",
        rest / 3600,
        (rest % 3600) / 60,
        rest % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's algorithm).
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
    fn utc_dates_are_right() {
        assert_eq!(utc(Timestamp(0)), "1970-01-01 00:00:00Z");
        assert_eq!(utc(Timestamp(1_700_000_000_000)), "2023-11-14 22:13:20Z");
        assert_eq!(utc(Timestamp(951_782_400_000)), "2000-02-29 00:00:00Z");
    }

    #[test]
    fn ages_use_the_largest_unit() {
        let now = Timestamp(10_000_000);
        assert_eq!(ago(Timestamp(9_988_000), now), "12s ago");
        assert_eq!(ago(Timestamp(10_000_000 - 300_000), now), "5m ago");
        assert_eq!(ago(Timestamp(now.0 + 5), now), "just now");
    }
}
