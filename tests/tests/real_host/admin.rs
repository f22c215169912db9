//! The admin socket under the real unit: `/run/fleetnode` as the unit's `RuntimeDirectory=`
//! makes it, the socket root's, a user made for the test refused and root served; with
//! `admin.group` and `Group=`, a member of that group served too.

use std::process::Output;
use std::time::{Duration, Instant};

use fleetnode_tests::real_host::{AgentOptions, RealHost};
use fleetnode_tests::{HarnessError, Result};

use crate::common::run;

const SOCKET: &str = "/run/fleetnode/admin.sock";

/// `fleetnode-agent <args>` inside, as `user` (root when `None`).
fn cli(host: &mut RealHost, user: Option<&str>, args: &[&str]) -> Result<Output> {
    let (reuid, regid) = user.map_or((String::new(), String::new()), |user| {
        (format!("--reuid={user}"), format!("--regid={user}"))
    });
    let mut argv: Vec<&str> = Vec::new();
    if user.is_some() {
        argv.extend(["setpriv", &reuid, &regid, "--init-groups", "--"]);
    }
    argv.push("/usr/local/bin/fleetnode-agent");
    argv.extend(args);
    host.container().output(&argv)
}

fn shown(output: &Output) -> String {
    format!(
        "{}: {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn assert_refused(output: &Output) {
    assert!(!output.status.success(), "{}", shown(output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("permission denied"),
        "{}",
        shown(output)
    );
}

fn assert_served(output: &Output) {
    assert!(output.status.success(), "{}", shown(output));
}

/// Waits until `stat -c '%a %U %G'` of the socket says `expected` (the agent binds it again
/// after a restart).
fn wait_for_socket(host: &mut RealHost, expected: &str) -> Result<()> {
    let started = Instant::now();
    let mut last = String::new();
    while started.elapsed() < Duration::from_secs(60) {
        let output = host
            .container()
            .output(&["stat", "-c", "%a %U %G", SOCKET])?;
        last = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        if last == expected {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    Err(HarnessError::Setup {
        what: format!("the admin socket {SOCKET} as {expected:?}"),
        message: format!("it stayed {last:?}\n{}", host.agent_journal(40)),
    })
}

#[test]
fn only_root_and_the_admin_group_may_use_the_admin_socket() {
    run("admin", AgentOptions::default(), |host| {
        host.container().bash(
            "groupadd fleetnode-admin\n\
             useradd --no-create-home --shell /usr/sbin/nologin --user-group fnoutsider\n\
             useradd --no-create-home --shell /usr/sbin/nologin --user-group \
               --groups fleetnode-admin fnoperator",
        )?;
        let dir = host
            .container()
            .run(&["stat", "-c", "%a %U %G", "/run/fleetnode"])?;
        assert_eq!(dir.trim(), "750 root root");
        wait_for_socket(host, "600 root root")?;
        for user in ["fnoutsider", "fnoperator"] {
            for args in [&["status"][..], &["pause"], &["resume"]] {
                assert_refused(&cli(host, Some(user), args)?);
            }
        }
        let status = cli(host, None, &["status", "--json"])?;
        assert_served(&status);
        let value: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
        assert_eq!(value["paused"], false, "{value}");
        // TCP keeps only the metrics, which every local user may read.
        let scraped = host.container().bash(
            "exec 3<>/dev/tcp/127.0.0.1/9731\n\
             printf 'GET /status HTTP/1.0\\r\\n\\r\\n' >&3\n\
             cat <&3",
        )?;
        assert!(
            scraped.lines().next().is_some_and(|l| l.contains(" 404 ")),
            "{scraped}"
        );

        host.container().bash(
            "mkdir -p /etc/systemd/system/fleetnode-agent.service.d\n\
             printf '[Service]\\nGroup=fleetnode-admin\\n' \
               >/etc/systemd/system/fleetnode-agent.service.d/admin-group.conf\n\
             printf '\\n[admin]\\ngroup = \"fleetnode-admin\"\\n' >>/etc/fleetnode/agent.toml\n\
             systemctl daemon-reload\n\
             systemctl restart fleetnode-agent.service",
        )?;
        wait_for_socket(host, "660 root fleetnode-admin")?;
        let dir = host
            .container()
            .run(&["stat", "-c", "%a %U %G", "/run/fleetnode"])?;
        assert_eq!(dir.trim(), "750 root fleetnode-admin");
        assert_refused(&cli(host, Some("fnoutsider"), &["pause"])?);
        assert_served(&cli(host, Some("fnoperator"), &["pause"])?);
        let status = cli(host, None, &["status", "--json"])?;
        let value: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
        assert_eq!(value["paused"], true, "{value}");
        assert_served(&cli(host, None, &["resume"])?);
        Ok(())
    });
}
