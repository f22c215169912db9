//! What `systemctl show <unit> --property=...` prints, as pure functions: the parse of its
//! `Key=Value` lines and what those properties say about a switch's unit. Both run on another
//! program's output, so neither may panic or trust a value's shape.

use std::collections::BTreeMap;

/// The properties read from `systemctl show`.
pub const SHOWN: &str =
    "LoadState,ActiveState,SubState,Result,ExecMainCode,ExecMainStatus,Description";
/// `ExecMainCode` values (the `CLD_*` codes of waitid(2)).
const CLD_EXITED: &str = "1";

/// The properties `systemctl show` printed.
pub type Properties = BTreeMap<String, String>;

/// Parses `Key=Value` lines (the value may hold `=`; a line without one is skipped). Refuses
/// output without `LoadState` or `ActiveState`, which `systemctl show` prints for every unit
/// name, loaded or not.
pub fn parse(stdout: &str) -> Result<Properties, &'static str> {
    let shown: Properties = stdout
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect();
    if !shown.contains_key("LoadState") || !shown.contains_key("ActiveState") {
        return Err("no LoadState or ActiveState");
    }
    Ok(shown)
}

/// What a switch unit's properties say, before its output is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitView {
    /// Not loaded, or loaded but never ran its command (unloaded between runs).
    Gone,
    /// Still running.
    Running,
    /// Its command ended.
    Exited {
        /// The exit code when it exited (not when killed by a signal).
        code: Option<i32>,
        /// What to add to the output tail about how it ended, when the code does not say.
        note: Option<String>,
    },
}

impl UnitView {
    /// Whether the unit still runs (its output is still growing).
    pub fn is_running(&self) -> bool {
        matches!(self, Self::Running)
    }
}

/// What `shown` says about the unit.
pub fn view(shown: &Properties) -> UnitView {
    let field = |key: &str| shown.get(key).map(String::as_str).unwrap_or_default();
    let running = matches!(
        (field("ActiveState"), field("SubState")),
        ("active", sub) if sub != "exited"
    ) || matches!(
        field("ActiveState"),
        "activating" | "deactivating" | "reloading" | "refreshing"
    );
    if field("LoadState") != "loaded" {
        return UnitView::Gone;
    }
    if running {
        return UnitView::Running;
    }
    let main_ran = field("ExecMainCode") != "0" && !field("ExecMainCode").is_empty();
    if field("ActiveState") == "inactive" && !main_ran {
        return UnitView::Gone;
    }
    let code = if field("ExecMainCode") == CLD_EXITED {
        field("ExecMainStatus").parse::<i32>().ok()
    } else {
        None
    };
    let note = if !main_ran {
        Some(format!(
            "(fleetnode: the unit failed before switch-to-configuration ran: Result={}; \
             setting the system profile failed)",
            field("Result")
        ))
    } else if code.is_none() {
        Some(format!(
            "(fleetnode: switch-to-configuration was killed by signal {})",
            field("ExecMainStatus")
        ))
    } else {
        None
    };
    UnitView::Exited { code, note }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(text: &str) -> Properties {
        parse(text).unwrap()
    }

    #[test]
    fn values_may_hold_equals_signs_and_junk_lines_are_skipped() {
        let props = shown("LoadState=loaded\nActiveState=active\nnoise\nDescription=a=b\n");
        assert_eq!(props["Description"], "a=b");
        assert_eq!(props.len(), 3);
        assert!(parse("SubState=running\n").is_err());
        assert!(parse("").is_err());
    }

    #[test]
    fn the_view_follows_systemds_states() {
        let cases = [
            ("LoadState=not-found\nActiveState=inactive", UnitView::Gone),
            (
                "LoadState=loaded\nActiveState=active\nSubState=running",
                UnitView::Running,
            ),
            (
                "LoadState=loaded\nActiveState=deactivating\nSubState=stop-sigterm",
                UnitView::Running,
            ),
            (
                "LoadState=loaded\nActiveState=inactive\nExecMainCode=0",
                UnitView::Gone,
            ),
            (
                "LoadState=loaded\nActiveState=active\nSubState=exited\nExecMainCode=1\nExecMainStatus=4",
                UnitView::Exited {
                    code: Some(4),
                    note: None,
                },
            ),
            (
                "LoadState=loaded\nActiveState=failed\nExecMainCode=1\nExecMainStatus=x",
                UnitView::Exited {
                    code: None,
                    note: Some(
                        "(fleetnode: switch-to-configuration was killed by signal x)".into(),
                    ),
                },
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(view(&shown(text)), expected, "{text}");
        }
        let UnitView::Exited {
            code: None,
            note: Some(note),
        } = view(&shown(
            "LoadState=loaded\nActiveState=failed\nExecMainCode=0\nResult=exit-code",
        ))
        else {
            panic!("a unit whose command never ran is an exit with a note");
        };
        assert!(note.contains("Result=exit-code"), "{note}");
    }
}
