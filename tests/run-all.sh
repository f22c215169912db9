#!/usr/bin/env bash
# Runs every test of the workspace, the real-host tier included: the README's test command and
# CI's test step. First makes sure the Debian packages the tests need are installed:
#   debootstrap, systemd-container  the real-host tier (a Debian container with systemd)
#   postgresql                      the control plane's PostgreSQL store (a throw-away cluster)
#   haproxy                         the load-balancer test (HAProxy in front of control planes)
#   chromium, chromium-driver       the console's tests (a headless browser through WebDriver)
# As root it installs what is missing (apt-get update first); otherwise it names what is
# missing and stops. Arguments are passed on to `cargo test`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

have_postgresql() {
    local dir
    for dir in /usr/lib/postgresql/*/bin; do
        [[ -x $dir/initdb && -x $dir/postgres ]] && return 0
    done
    command -v initdb >/dev/null 2>&1 && command -v postgres >/dev/null 2>&1
}

missing=()
command -v debootstrap >/dev/null 2>&1 || [[ -x /usr/sbin/debootstrap ]] || missing+=(debootstrap)
command -v systemd-nspawn >/dev/null 2>&1 || missing+=(systemd-container)
have_postgresql || missing+=(postgresql)
command -v haproxy >/dev/null 2>&1 || [[ -x /usr/sbin/haproxy ]] || missing+=(haproxy)
[[ -x /usr/bin/chromium ]] || missing+=(chromium)
[[ -x /usr/bin/chromedriver ]] || missing+=(chromium-driver)

if ((${#missing[@]} > 0)); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "the tests need these Debian packages, which are not installed: ${missing[*]}" >&2
        echo "install them (apt-get install ${missing[*]}) or run this script as root, which installs them" >&2
        exit 1
    fi
    echo "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # apt's own chatter is shown only when it fails.
    if ! apt_log="$( (apt-get update && apt-get install -y --no-install-recommends "${missing[@]}") 2>&1)"; then
        printf '%s\n' "$apt_log" >&2
        exit 1
    fi
fi

exec cargo test --workspace --locked --features fleetnode-tests/real-host "$@"
