//! The operator's web console in a real browser (Debian's chromium through chromedriver),
//! against a real control plane and real agents on fake roots: signing in and out, the fleet
//! page against the API, a rollout started from an uploaded manifest and followed live, a halt
//! and its reason, a host rolled back from the console into the audit log, hostile text from a
//! host shown as text with no script run, forged posts refused, and a revoked operator's page
//! ending. One fleet and one browser serve every check, in order.
//!
//! Screenshots of each page are written to `$FLEETNODE_CONSOLE_SCREENSHOTS` when it is set
//! (`FLEETNODE_CONSOLE_SCREENSHOTS=$PWD/docs/console` refreshes the ones the docs show), else
//! into the test's own directory.

use std::path::{Path, PathBuf};

use fleetnode_fixtures::fakeroot::Behaviour;
use fleetnode_tests::browser::Browser;
use fleetnode_tests::{Fleet, FleetOptions, HarnessError, Result, Shape};
use fleetnode_wire::{AuditLog, DirectiveKind, PhaseKind};

use crate::common::run;

/// What the broken release's switch prints on the canary: a script, and an attribute break-out
/// whose handler would mark the page.
const HOSTILE: &str = "<script>window.__xss=1</script>\"><img src=x onerror=\"window.__xss=2\">";

#[test]
fn the_console_in_a_browser() {
    run(|| {
        let mut fleet = Fleet::start(FleetOptions::hosts(3, 1))?;
        let dir = tempfile::tempdir().map_err(HarnessError::io("make a directory"))?;
        let shots = screenshots(dir.path())?;
        let token = operator(&fleet, "dana")?;
        let browser = Browser::start(dir.path())?;
        let base = fleet.cp.url();

        sign_in(&browser, &base, &token, &shots)?;
        fleet_page(&browser, &fleet, &base, &shots)?;
        healthy_rollout(&browser, &mut fleet, &base, &shots)?;
        broken_rollout(&browser, &mut fleet, &base, &shots)?;
        hostile_text(&browser, &base, &shots)?;
        host_rollback(&browser, &fleet, &base, &shots)?;
        forged_posts(&browser, &fleet, &base)?;
        sign_out_and_revoke(&browser, &fleet, &base, &token)?;
        Ok(())
    });
}

fn sign_in(browser: &Browser, base: &str, token: &str, shots: &Path) -> Result<()> {
    browser.goto(&format!("{base}/console/"))?;
    browser.wait_for("#login-form")?;
    browser.screenshot(&shots.join("login.png"))?;
    browser.type_text(&browser.find("#token")?, "fno_not-a-token")?;
    browser.click(&browser.find("#login-submit")?)?;
    let error = browser.wait_for("#login-error")?;
    assert!(browser.text(&error)?.contains("refused"));
    assert!(
        browser.cookies()?.is_empty(),
        "a refused sign-in sets no cookie"
    );

    browser.type_text(&browser.find("#token")?, token)?;
    browser.click(&browser.find("#login-submit")?)?;
    let who = browser.wait_for("#who")?;
    assert_eq!(browser.text(&who)?, "dana");
    let cookies = browser.cookies()?;
    let session = cookies
        .iter()
        .find(|c| c.name == "__Host-fleetnode-session")
        .expect("the session cookie");
    assert!(session.http_only && session.secure, "{session:?}");
    assert_eq!(session.same_site.as_deref(), Some("Strict"));
    assert!(session.expiry.is_some(), "the cookie expires");
    Ok(())
}

fn fleet_page(browser: &Browser, fleet: &Fleet, base: &str, shots: &Path) -> Result<()> {
    browser.goto(&format!("{base}/console/"))?;
    for id in fleet.ids() {
        let api = fleet.detail(&id)?.row.phase;
        let shown = attr(browser, &format!("tr[data-host=\"{id}\"]"), "data-phase")?;
        assert_eq!(shown.as_deref(), Some(api.name()), "{id}");
    }
    browser.screenshot(&shots.join("fleet.png"))?;
    browser.type_text(&browser.find("#filter-tag")?, "canary")?;
    browser.click(&browser.find("#filter-submit")?)?;
    browser.wait_until("the canary alone", |b| {
        let shown = b.execute(
            "return Array.from(document.querySelectorAll('tr[data-host]')).map(function (r) { return r.getAttribute('data-host'); });",
            vec![],
        )?;
        Ok(shown == serde_json::json!(["web-01"]))
    })?;
    Ok(())
}

/// Starts a rollout of `release` from the console: upload, preview, confirm. Returns the
/// rollout page's path.
fn start_from_console(
    browser: &Browser,
    base: &str,
    manifest: &Path,
    shots: &Path,
    preview: Option<&str>,
) -> Result<String> {
    browser.goto(&format!("{base}/console/start"))?;
    browser.type_text(
        &browser.find("#start-manifest")?,
        &manifest.display().to_string(),
    )?;
    browser.type_text(&browser.find("#start-waves")?, "tag:canary,100%")?;
    browser.type_text(&browser.find("#start-bake")?, "5s")?;
    if let Some(name) = preview {
        browser.screenshot(&shots.join("start.png"))?;
        browser.click(&browser.find("#start-preview")?)?;
        browser.wait_for("#preview-waves")?;
        browser.screenshot(&shots.join(name))?;
    } else {
        browser.click(&browser.find("#start-preview")?)?;
        browser.wait_for("#preview-waves")?;
    }
    let first = browser.find("li[data-wave=\"1\"]")?;
    assert!(browser.text(&first)?.contains("web-01"));
    let second = browser.find("li[data-wave=\"2\"]")?;
    assert!(browser.text(&second)?.contains("web-02") && browser.text(&second)?.contains("web-03"));
    browser.click(&browser.find("#preview-confirm")?)?;
    browser.wait_for("#rollout")?;
    let url = browser.current_url()?;
    Ok(url[url.find("/console/").unwrap_or(0)..].to_owned())
}

fn healthy_rollout(browser: &Browser, fleet: &mut Fleet, base: &str, shots: &Path) -> Result<()> {
    let gen2 = fleet.release("gen-2", &[])?;
    let manifest = fleet.write_manifest(&gen2, "gen-2", Shape::CachixDeploy)?;
    let page = start_from_console(browser, base, &manifest, shots, Some("preview.png"))?;
    assert_eq!(page, "/console/rollouts/1");
    // A mark that a reload would wipe: the page must follow the rollout without one.
    browser.execute("window.__same_page = true;", vec![])?;
    let state = |b: &Browser, host: &str| -> Result<Option<String>> {
        attr(
            b,
            &format!("#rollout-hosts tr[data-host=\"{host}\"]"),
            "data-state",
        )
    };
    browser.wait_until("the canary converged, the rest waiting for the bake", |b| {
        Ok(state(b, "web-01")?.as_deref() == Some("converged")
            && state(b, "web-02")?.as_deref() == Some("pending"))
    })?;
    browser.screenshot(&shots.join("rollout-wave-1.png"))?;
    browser.wait_until("the rollout completed", |b| {
        Ok(text_of(b, "#rollout-phase")? == "completed")
    })?;
    let same = browser.execute("return window.__same_page === true;", vec![])?;
    assert_eq!(same, serde_json::json!(true), "the page was reloaded");
    browser.screenshot(&shots.join("rollout-completed.png"))?;
    Ok(())
}

fn broken_rollout(browser: &Browser, fleet: &mut Fleet, base: &str, shots: &Path) -> Result<()> {
    let gen3 = fleet.release("gen-3", &[])?;
    fleet.host("web-01")?.root().behaviour(
        gen3.of("web-01"),
        Behaviour::Fail {
            exit_code: 1,
            output: HOSTILE.to_owned(),
        },
    );
    let manifest = fleet.write_manifest(&gen3, "gen-3", Shape::Hosts)?;
    let page = start_from_console(browser, base, &manifest, shots, None)?;
    assert_eq!(page, "/console/rollouts/2");
    browser.execute("window.__same_page = true;", vec![])?;
    browser.wait_until("the halt and its reason", |b| {
        Ok(!text_of(b, "#rollout-halt")?.is_empty())
    })?;
    let halt = text_of(browser, "#rollout-halt")?;
    assert!(halt.contains("web-01"), "{halt}");
    let same = browser.execute("return window.__same_page === true;", vec![])?;
    assert_eq!(same, serde_json::json!(true), "the page was reloaded");
    browser.screenshot(&shots.join("rollout-halted.png"))?;
    Ok(())
}

fn hostile_text(browser: &Browser, base: &str, shots: &Path) -> Result<()> {
    browser.goto(&format!("{base}/console/hosts/web-01"))?;
    browser.wait_for("#host-output-tail")?;
    assert!(
        text_of(browser, "#host-output-tail")?.contains(HOSTILE),
        "shown as the text it is"
    );
    assert!(
        browser.find_all("#host-output-tail *")?.is_empty(),
        "no element made of it"
    );
    assert_eq!(browser.dialog_text()?, None);
    let ran = browser.execute("return window.__xss === undefined;", vec![])?;
    assert_eq!(
        ran,
        serde_json::json!(true),
        "a script of the host's text ran"
    );
    browser.screenshot(&shots.join("host.png"))?;
    Ok(())
}

fn host_rollback(browser: &Browser, fleet: &Fleet, base: &str, shots: &Path) -> Result<()> {
    browser.goto(&format!("{base}/console/hosts/web-02"))?;
    click_live(browser, "#action-rollback")?;
    let sentence = browser.text(&browser.wait_for("#confirm-sentence")?)?;
    let gen1 = fleet.host("web-02")?.initial().clone();
    assert!(
        sentence.contains("web-02") && sentence.contains(gen1.as_str()),
        "{sentence}"
    );
    browser.screenshot(&shots.join("confirm-rollback.png"))?;
    browser.click(&browser.find("#confirm-submit")?)?;
    browser.wait_for("#host")?;
    match fleet.detail("web-02")?.desired.directive.map(|d| d.kind) {
        Some(DirectiveKind::Rollback { to }) => assert_eq!(to, Some(gen1)),
        other => panic!("not a rollback directive: {other:?}"),
    }
    let log: AuditLog = fleet.cp.cli_json(&["audit"])?;
    let entry = log
        .entries
        .iter()
        .rev()
        .find(|e| e.action == "rollback")
        .expect("the rollback in the audit log");
    assert_eq!(entry.who, "dana");
    assert_eq!(
        entry
            .hosts
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        ["web-02"]
    );
    browser.goto(&format!("{base}/console/audit?who=dana"))?;
    browser.wait_for("tr[data-action=\"rollback\"][data-who=\"dana\"]")?;
    browser.screenshot(&shots.join("audit.png"))?;
    Ok(())
}

fn forged_posts(browser: &Browser, fleet: &Fleet, base: &str) -> Result<()> {
    // The console's own form without its CSRF token.
    browser.goto(&format!("{base}/console/hosts/web-03/pause"))?;
    let csrf = browser.attribute(&browser.find("#confirm-form input[name=csrf]")?, "value")?;
    browser.execute(
        "document.querySelector('#confirm-form input[name=csrf]').remove(); document.getElementById('confirm-form').submit();",
        vec![],
    )?;
    let refused = browser.text(&browser.wait_for("#error-message")?)?;
    assert!(refused.contains("CSRF"), "{refused}");

    // The right token, posted from another origin.
    let page = format!(
        "data:text/html,<form id=f method=post action=\"{base}/console/hosts/web-03/pause\"><input name=csrf value=\"{}\"></form><script>document.getElementById('f').submit()</script>",
        csrf.unwrap_or_default()
    );
    browser.goto(&page)?;
    browser.wait_until("the forged post answered", |b| {
        Ok(b.current_url()?.starts_with(base))
    })?;
    assert!(
        browser.find_all("#host-actions")?.is_empty(),
        "the forged post reached the host page"
    );
    assert!(
        !fleet.detail("web-03")?.desired.paused,
        "a forged post paused the host"
    );
    assert_eq!(fleet.detail("web-03")?.row.phase, PhaseKind::Converged);
    Ok(())
}

fn sign_out_and_revoke(browser: &Browser, fleet: &Fleet, base: &str, token: &str) -> Result<()> {
    browser.goto(&format!("{base}/console/"))?;
    click_live(browser, "#logout")?;
    browser.wait_for("#login-notice")?;
    browser.goto(&format!("{base}/console/rollouts"))?;
    browser.wait_for("#login-form")?;

    // Signed in again, an open page ends when the operator is revoked.
    browser.type_text(&browser.find("#token")?, token)?;
    browser.click(&browser.find("#login-submit")?)?;
    browser.wait_for("#who")?;
    browser.wait_until("the page follows the fleet", |b| {
        Ok(attr(b, "#live-status", "data-state")?.as_deref() == Some("on"))
    })?;
    fleet.cp(&["revoke-operator", "dana"])?;
    browser.wait_until("the page gone to sign-in", |b| {
        Ok(b.current_url()?.contains("/console/login") && !b.find_all("#login-form")?.is_empty())
    })?;
    let notice = browser.text(&browser.find("#login-notice")?)?;
    assert!(notice.contains("revoked"), "{notice}");
    Ok(())
}

/// An attribute of the element `css` matches, read in one script: a live page swaps its
/// content as the fleet changes, so an element found in one command may be gone by the next.
fn attr(browser: &Browser, css: &str, name: &str) -> Result<Option<String>> {
    let value = browser.execute(
        "var e = document.querySelector(arguments[0]); return e ? e.getAttribute(arguments[1]) : null;",
        vec![css.into(), name.into()],
    )?;
    Ok(value.as_str().map(str::to_owned))
}

/// The text of the element `css` matches ("" when none does), read in one script.
fn text_of(browser: &Browser, css: &str) -> Result<String> {
    let value = browser.execute(
        "var e = document.querySelector(arguments[0]); return e ? e.innerText : '';",
        vec![css.into()],
    )?;
    Ok(value.as_str().unwrap_or_default().to_owned())
}

/// Clicks the element `css` matches on a live page: found again if the page swapped it
/// between the finding and the click.
fn click_live(browser: &Browser, css: &str) -> Result<()> {
    let mut tries = 0;
    loop {
        tries += 1;
        match browser.wait_for(css).and_then(|e| browser.click(&e)) {
            Err(HarnessError::Browser { code, .. })
                if code == "stale element reference" && tries < 5 => {}
            other => return other,
        }
    }
}

/// Adds an operator and returns their token.
fn operator(fleet: &Fleet, name: &str) -> Result<String> {
    let file = fleet.work_dir().join(format!("{name}.token"));
    fleet.cp(&[
        "add-operator",
        name,
        "--token-file",
        &file.display().to_string(),
    ])?;
    std::fs::read_to_string(&file)
        .map(|t| t.trim().to_owned())
        .map_err(HarnessError::io(format!("read {}", file.display())))
}

fn screenshots(dir: &Path) -> Result<PathBuf> {
    let shots = std::env::var_os("FLEETNODE_CONSOLE_SCREENSHOTS")
        .map_or_else(|| dir.join("screenshots"), PathBuf::from);
    std::fs::create_dir_all(&shots)
        .map_err(HarnessError::io(format!("create {}", shots.display())))?;
    Ok(shots)
}
