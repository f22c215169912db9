//! The browser harness itself, on a page of its own: the WebDriver commands the console's tests
//! rely on do what they say in Debian's chromium, and a WebDriver error reaches the test with
//! its code.

use fleetnode_tests::HarnessError;
use fleetnode_tests::browser::Browser;

use crate::common::run;

/// A page with a form, a dialog and a script that writes what was typed, as a `data:` address
/// (the browser allows its inline script; the console's pages never have one).
const PAGE: &str = "data:text/html,<title>harness</title>\
    <input id=name><button id=go>go</button><p id=out>empty</p>\
    <script>document.getElementById('go').onclick=function(){\
    var v=document.getElementById('name').value;\
    if(confirm('write '+v+'?')){document.getElementById('out').textContent='hello '+v;}};</script>";

#[test]
fn the_browser_harness_drives_chromium() {
    run(|| {
        let dir = tempfile::tempdir().map_err(HarnessError::io("make a directory"))?;
        let browser = Browser::start(dir.path())?;
        browser.goto(PAGE)?;
        assert_eq!(browser.title()?, "harness");

        // Typing, clicking, the confirmation dialog and the text the script wrote.
        let name = browser.find("#name")?;
        browser.type_text(&name, "<b>world</b>")?;
        browser.click(&browser.find("#go")?)?;
        assert_eq!(
            browser.dialog_text()?.as_deref(),
            Some("write <b>world</b>?")
        );
        browser.dismiss_dialog()?;
        let out = browser.find("#out")?;
        assert_eq!(
            browser.text(&out)?,
            "empty",
            "a dismissed dialog changes nothing"
        );
        browser.click(&browser.find("#go")?)?;
        browser.accept_dialog()?;
        browser.wait_until("the script's text", |b| {
            Ok(b.text(&b.find("#out")?)? == "hello <b>world</b>")
        })?;
        assert_eq!(browser.dialog_text()?, None);

        // Attributes, scripts, element lists.
        assert_eq!(browser.attribute(&name, "id")?.as_deref(), Some("name"));
        assert_eq!(browser.attribute(&name, "placeholder")?, None);
        let sum = browser.execute(
            "return arguments[0] + arguments[1];",
            vec![2.into(), 3.into()],
        )?;
        assert_eq!(sum, serde_json::json!(5));
        assert_eq!(browser.find_all("input, button")?.len(), 2);
        assert!(browser.find_all(".absent")?.is_empty());

        // What the page writes to its console reaches the test.
        browser.execute("console.error('marker-' + 42);", vec![])?;
        let log = browser.console_log()?;
        assert!(log.iter().any(|line| line.contains("marker-42")), "{log:?}");

        // A missing element is the WebDriver error, named.
        match browser.find("#absent") {
            Err(HarnessError::Browser { code, .. }) => assert_eq!(code, "no such element"),
            other => panic!("expected `no such element`, got {other:?}"),
        }

        // A screenshot is a PNG.
        let shot = dir.path().join("page.png");
        browser.screenshot(&shot)?;
        let png = std::fs::read(&shot).map_err(HarnessError::io("read the screenshot"))?;
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        Ok(())
    });
}
