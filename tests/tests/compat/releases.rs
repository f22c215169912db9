//! The record of releases agrees with itself: every release in `tests/compat/releases.toml` has
//! its `CHANGELOG.md` section naming its protocol and commit and its frozen examples, and the
//! tree's version is that release's or a later one.

use fleetnode_tests::old_release;

/// `(major, minor, patch)` of a version such as `0.2.0-dev` (the suffix left out).
fn numbers(version: &str) -> (u64, u64, u64) {
    let core = version.split('-').next().unwrap_or(version);
    let mut parts = core.split('.').map(|p| p.parse::<u64>().unwrap());
    (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    )
}

#[test]
fn every_release_has_its_changelog_section_and_frozen_examples() {
    let root = old_release::repository();
    let changelog = std::fs::read_to_string(root.join("CHANGELOG.md")).unwrap();
    let releases = old_release::releases().unwrap();
    assert!(!releases.is_empty());
    for release in &releases {
        let heading = changelog
            .lines()
            .find(|line| line.starts_with(&format!("## {} (", release.version)))
            .unwrap_or_else(|| panic!("CHANGELOG.md has no section for {}", release.version));
        assert!(
            heading.contains(&format!("protocol {}", release.protocol)),
            "{heading}"
        );
        assert!(heading.contains(&release.commit[..7]), "{heading}");
        let frozen = root.join(format!("tests/compat/protocol-{}", release.protocol));
        assert!(frozen.join("FROZEN").is_file(), "{}", frozen.display());
    }
    let latest = releases.last().unwrap();
    let tree = env!("CARGO_PKG_VERSION");
    assert!(
        numbers(tree) >= numbers(&latest.version),
        "the tree's version {tree} is older than the latest release {}",
        latest.version
    );
    if tree != latest.version {
        // Between releases the tree is the next version in development (`-dev`), or, at the
        // release commit itself, the release not yet recorded.
        assert!(numbers(tree) > numbers(&latest.version), "{tree}");
    }
}
