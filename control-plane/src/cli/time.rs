//! Ages for people: "12s ago" (dates are `Timestamp`'s own `Display`).

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

/// `then - now` as "in 12s", "in 5m", "in 3h", "in 2d" ("now" when it is not ahead).
pub fn ahead(then: Timestamp, now: Timestamp) -> String {
    if then <= now {
        return "now".to_owned();
    }
    let secs = (then.0 - now.0).div_ceil(1000);
    match secs {
        0..60 => format!("in {secs}s"),
        60..3600 => format!("in {}m", secs / 60),
        3600..86_400 => format!("in {}h", secs / 3600),
        _ => format!("in {}d", secs / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_use_the_largest_unit() {
        let now = Timestamp(10_000_000);
        assert_eq!(ago(Timestamp(9_988_000), now), "12s ago");
        assert_eq!(ago(Timestamp(10_000_000 - 300_000), now), "5m ago");
        assert_eq!(ago(Timestamp(now.0 + 5), now), "just now");
    }

    #[test]
    fn waits_ahead_use_the_largest_unit() {
        let now = Timestamp(10_000_000);
        assert_eq!(ahead(Timestamp(now.0 + 12_000), now), "in 12s");
        assert_eq!(ahead(Timestamp(now.0 + 1), now), "in 1s");
        assert_eq!(ahead(Timestamp(now.0 + 7_200_000), now), "in 2h");
        assert_eq!(ahead(now, now), "now");
    }
}
