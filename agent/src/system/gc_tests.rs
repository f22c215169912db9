//! The roots of the generations kept, against the fake store's garbage collector: what is
//! kept survives `nix-collect-garbage -d`, what is released goes, and a generation already
//! rooted is not rooted again.

use std::collections::BTreeSet;

use fleetnode_fixtures::fakeroot::FakeRoot;

use super::System;
use super::tests::system_for;

fn realise_calls(fake: &FakeRoot) -> usize {
    fake.command_log()
        .iter()
        .filter(|argv| argv.iter().any(|a| a == "--realise"))
        .count()
}

#[tokio::test]
async fn kept_generations_survive_a_collection_and_released_ones_do_not() {
    let fake = FakeRoot::new();
    let system = system_for(&fake);
    let first = fake.add_closure("nixos-system-web-01-gen-1");
    let second = fake.add_closure("nixos-system-web-01-gen-2");
    let third = fake.add_closure("nixos-system-web-01-gen-3");
    let stray = fake.add_closure("nixos-system-web-01-stray");
    for generation in [&first, &second, &third] {
        fake.set_current(generation);
    }
    system
        .keep_generations(&BTreeSet::from([
            first.clone(),
            second.clone(),
            third.clone(),
        ]))
        .await
        .unwrap();
    let calls = realise_calls(&fake);
    assert_eq!(calls, 3);

    fake.delete_old_generations();
    assert_eq!(fake.collect_garbage(), vec![stray.clone()]);
    for generation in [&first, &second, &third] {
        assert!(
            fake.host_path(generation.as_str()).is_dir(),
            "{generation} was collected"
        );
    }

    // The same set again roots nothing anew; a smaller one releases the rest.
    system
        .keep_generations(&BTreeSet::from([second.clone(), third.clone()]))
        .await
        .unwrap();
    assert_eq!(
        realise_calls(&fake),
        calls,
        "a root in place was made again"
    );
    assert_eq!(fake.collect_garbage(), vec![first.clone()]);
    let links: Vec<String> = std::fs::read_dir(fake.state_dir().join("gcroots/kept"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(links.len(), 2, "{links:?}");
}

#[tokio::test]
async fn a_generation_already_collected_is_reported_and_the_others_still_rooted() {
    let fake = FakeRoot::new();
    let system = system_for(&fake);
    let gone = fake.missing_closure("nixos-system-web-01-gone");
    let here = fake.add_closure("nixos-system-web-01-here");
    let error = system
        .keep_generations(&BTreeSet::from([gone.clone(), here.clone()]))
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains(gone.as_str()), "{error}");
    assert!(error.contains("1 of 2"), "{error}");
    assert!(fake.collect_garbage().is_empty());
    assert!(fake.host_path(here.as_str()).is_dir());
}
