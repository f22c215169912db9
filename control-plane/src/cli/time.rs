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
}
