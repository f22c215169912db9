//! Scenario 4 and defect 1: with `require_signatures`, closures not signed by a trusted key
//! are refused, including content-addressed ones (`nix store verify` counts those as valid
//! without any signature).

use fleetnode_state_machine::StorePath;
use fleetnode_tests::Result;
use fleetnode_tests::real_host::{AgentOptions, Behaviour, RealHost, Signer};

use crate::common::{latest_directive, reasons, run};

fn assert_refused(host: &mut RealHost, closure: &StorePath) -> Result<()> {
    let initial = host.initial().clone();
    let revision = host.set_target(closure, &[])?;
    let detail = host.wait_settled(revision, "failed")?;
    let report = host.report(Some(&detail));
    assert_eq!(
        reasons(latest_directive(&detail.recent_events)),
        ["realise-failed"],
        "{report}"
    );
    let failure = format!("{:?}", detail.recent_events.last().map(|e| &e.report));
    assert!(
        failure.contains("not signed by a trusted key"),
        "{failure}\n{report}"
    );
    assert_eq!(
        host.switch_log()
            .iter()
            .filter(|l| l.starts_with(closure.as_str()))
            .count(),
        0
    );
    let state = host.state()?;
    assert!(state.runs_committed(&initial), "{state:?}\n{report}");
    Ok(())
}

#[test]
fn unsigned_wrongly_signed_and_content_addressed_closures_are_refused() {
    run("signatures", AgentOptions::default(), |host| {
        let unsigned = host.build("nixos-system-real-01-unsigned", &Behaviour::Healthy)?;
        assert_refused(host, &unsigned)?;

        let rogue = host.build("nixos-system-real-01-rogue", &Behaviour::Healthy)?;
        host.sign(&rogue, Signer::Rogue)?;
        assert_refused(host, &rogue)?;

        let plain = host.build("nixos-system-real-01-ca", &Behaviour::Healthy)?;
        let content_addressed = host.make_content_addressed(&plain)?;
        let info = host.path_info(&content_addressed)?;
        assert!(info.contains("\"ca\":"), "{info}");
        assert!(!info.contains("signatures"), "{info}");
        assert_refused(host, &content_addressed)?;

        // A signed closure still goes through.
        let signed = host.published("nixos-system-real-01-signed", &Behaviour::Healthy)?;
        let revision = host.set_target(&signed, &[])?;
        host.wait_settled(revision, "converged")?;
        assert!(host.state()?.runs_committed(&signed));
        Ok(())
    });
}
