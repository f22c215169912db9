#!/usr/bin/env bash
# Static checks of the Nix files and the plain systemd units.
#
#   1. every .nix file in the repository parses (nix-instantiate --parse);
#   2. nix/rules.nix, the agent's rules as the modules apply them, agrees with
#      the table nix/tests/names.json (which a Rust test checks against the
#      agent itself) and its assertion messages say what they must
#      (nix/tests/rules.nix); a wrong table must make that check fail;
#   3. the sandbox of nix/units/fleetnode-agent.service is exactly
#      nix/hardening.nix, the one the NixOS module uses;
#   4. `systemd-analyze security --offline` scores the agent's unit at most
#      AGENT_EXPOSURE_MAX (4.5, docs/nixos.md); an unhardened unit must fail;
#   5. every unit in nix/units/ passes `systemd-analyze verify` with no output
#      at all: verify exits 0 on many warnings, so any line it prints fails.
#
# verify also checks that each Exec*= binary exists and is executable. The units
# name their real install paths (/usr/local/bin/...), which do not exist on a CI
# machine, so the units are verified unmodified inside a throw-away root
# (--root): the host's own unit tree is copied into it, and a stub executable is
# created at each path an Exec*= line names. Nothing in the units is rewritten.
#
# Only Debian's nix-bin is needed (no nixpkgs, no Nix store: evaluation uses
# the dummy store). Installs nix-bin and systemd from Debian when they are
# missing (CI runs as root). Run from anywhere inside the repository.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

need_packages=()
command -v nix-instantiate >/dev/null 2>&1 || need_packages+=(nix-bin)
command -v systemd-analyze >/dev/null 2>&1 || need_packages+=(systemd)
if ((${#need_packages[@]} > 0)); then
    if [[ "$(id -u)" != 0 ]]; then
        echo "nix-check: missing ${need_packages[*]}; run as root or install them first" >&2
        exit 1
    fi
    echo "nix-check: installing ${need_packages[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # apt's own chatter is shown only when it fails.
    if ! apt_log="$(apt-get update 2>&1)"; then
        printf '%s\n' "$apt_log" >&2
        exit 1
    fi
    if ! apt_log="$(apt-get install -y --no-install-recommends "${need_packages[@]}" 2>&1)"; then
        printf '%s\n' "$apt_log" >&2
        exit 1
    fi
fi

# Debian's nix.conf names a build group that does not exist outside a Nix
# installation; parsing needs no builds, so silence that warning.
export NIX_CONFIG="build-users-group ="

failures=0
fail() {
    echo "FAIL $*"
    failures=$((failures + 1))
}

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

# 1. Parse every Nix file, committed or not yet committed.
mapfile -t nix_files < <(
    { git ls-files --cached --others --exclude-standard -- '*.nix'; echo flake.nix; } |
        sort -u |
        while read -r file; do [[ -f "$file" ]] && echo "$file"; done
)
parsed=0
for file in "${nix_files[@]}"; do
    if output="$(nix-instantiate --parse "$file" 2>&1 >/dev/null)" && [[ -z "$output" ]]; then
        parsed=$((parsed + 1))
    else
        fail "nix-instantiate --parse $file"
        printf '%s\n' "$output" | sed 's/^/    /'
    fi
done
echo "nix-check: parsed $parsed of ${#nix_files[@]} Nix files"

# 2. The agent's rules in Nix against the shared table and the messages.
evaluate() {
    nix-instantiate --eval --strict --store dummy:// "$@" 2>&1
}
if output="$(evaluate -E 'import ./nix/tests/rules.nix { }')"; then
    echo "nix-check: rules: ${output//\"/}"
else
    fail "nix/tests/rules.nix"
    printf '%s\n' "$output" | sed 's/^/    /'
fi
wrong_table='{ names = [ { name = "Web_01"; host_id = null; probe = null; } ]; }'
if evaluate -E "import ./nix/tests/rules.nix { table = $wrong_table; }" >/dev/null; then
    echo "nix-check: nix/tests/rules.nix accepted a table that contradicts nix/rules.nix; cannot trust it" >&2
    exit 1
fi

# 3. The plain agent unit's sandbox is nix/hardening.nix. Its sandbox section
# runs from the "# Sandbox:" comment to the next section; yes/no are written
# as NixOS writes booleans, true/false.
agent_unit=nix/units/fleetnode-agent.service
if rendered="$(evaluate --json -E 'import ./nix/tests/hardening.nix')"; then
    rendered="$(printf '%s' "$rendered" | sed -e 's/^"//' -e 's/"$//' -e 's/\\n/\n/g')"
    sandbox="$(
        awk '/^# Sandbox:/ { on = 1; next } /^\[/ { on = 0 } on && /^[A-Za-z]+=/' "$agent_unit" |
            sed -e 's/=yes$/=true/' -e 's/=no$/=false/' | LC_ALL=C sort
    )"
    rendered="$(printf '%s\n' "$rendered" | LC_ALL=C sort)"
    keys="$(printf '%s\n' "$rendered" | cut -d= -f1 | sort -u | paste -sd'|')"
    elsewhere="$(awk '/^# Sandbox:/ { on = 1 } /^\[/ { on = 0 } !on' "$agent_unit" | grep -E "^($keys)=" || true)"
    if [[ -z "$rendered" ]]; then
        fail "nix/tests/hardening.nix rendered no directive"
    elif [[ "$sandbox" != "$rendered" || -n "$elsewhere" ]]; then
        fail "$agent_unit: its sandbox differs from nix/hardening.nix (< unit, > hardening.nix)"
        diff <(printf '%s\n' "$sandbox") <(printf '%s\n' "$rendered") | sed 's/^/    /' || true
        [[ -z "$elsewhere" ]] || printf '%s\n' "$elsewhere" | sed 's/^/    outside the sandbox section: /'
    else
        echo "nix-check: $agent_unit carries the $(printf '%s\n' "$rendered" | wc -l) directives of nix/hardening.nix"
    fi
else
    fail "nix/tests/hardening.nix"
    printf '%s\n' "$rendered" | sed 's/^/    /'
fi

# 4. Exposure score of the agent's unit. --threshold takes the score times ten.
AGENT_EXPOSURE_MAX=45
exposure() {
    systemd-analyze security --offline=true --threshold="$AGENT_EXPOSURE_MAX" "$1" 2>&1
}
unhardened="$scratch/nix-check-unhardened.service"
printf '[Service]\nExecStart=/bin/true\n' >"$unhardened"
if output="$(exposure "$unhardened")" || [[ "$output" != *"Overall exposure level"* ]]; then
    echo "nix-check: systemd-analyze security did not score an unhardened unit above 4.5; cannot trust it" >&2
    printf '%s\n' "$output" | tail -n 3 >&2
    exit 1
fi
if output="$(exposure "$agent_unit")"; then
    echo "nix-check: $(printf '%s\n' "$output" | grep -o 'Overall exposure level.*' | sed 's/ [^ ]*$//') (at most 4.5)"
else
    fail "systemd-analyze security $agent_unit: exposure above 4.5"
    printf '%s\n' "$output" | grep -E '✗|Overall' | sed 's/^/    /'
fi

# 5. Verify the plain units in a throw-away root.
root="$scratch/root"

system_units=""
for dir in /usr/lib/systemd/system /lib/systemd/system; do
    if [[ -e "$dir/sysinit.target" ]]; then
        system_units="$dir"
        break
    fi
done
if [[ -z "$system_units" ]]; then
    echo "nix-check: no systemd unit directory with sysinit.target found" >&2
    exit 1
fi
mkdir -p "$root/usr/lib/systemd" "$root/etc/systemd/system"
cp -a "$system_units" "$root/usr/lib/systemd/system"

# The binary of every Exec*= line: first word after the key, without the
# special prefixes (@ - : + !) systemd allows in front of it.
exec_binaries() {
    sed -n 's/^[[:space:]]*Exec[A-Za-z]*=[[:space:]]*//p' "$1" |
        sed 's/^[-@:+!]*//' |
        awk '{ print $1 }'
}

units=(nix/units/*.service)
verified=0
for unit in "${units[@]}"; do
    cp "$unit" "$root/etc/systemd/system/"
    while read -r binary; do
        [[ "$binary" == /* ]] || continue
        mkdir -p "$root$(dirname "$binary")"
        printf '#!/bin/sh\nexit 0\n' >"$root$binary"
        chmod 0755 "$root$binary"
    done < <(exec_binaries "$unit")
done

# Prove that verify reports problems here at all, so that silence means
# something: a unit with an unknown key must produce output.
printf '[Service]\nExecStart=/bin/true\nNoSuchDirective=1\n' >"$root/etc/systemd/system/nix-check-canary.service"
if [[ -z "$(systemd-analyze verify --root="$root" nix-check-canary.service 2>&1)" ]]; then
    echo "nix-check: systemd-analyze verify printed nothing for a broken unit; cannot trust it" >&2
    exit 1
fi
rm "$root/etc/systemd/system/nix-check-canary.service"

for unit in "${units[@]}"; do
    name="$(basename "$unit")"
    if output="$(systemd-analyze verify --root="$root" "$name" 2>&1)" && [[ -z "$output" ]]; then
        verified=$((verified + 1))
    else
        fail "systemd-analyze verify $unit"
        printf '%s\n' "$output" | sed -e "s|$root/etc/systemd/system/|nix/units/|g" -e 's/^/    /'
    fi
done
echo "nix-check: verified $verified of ${#units[@]} systemd units ($(systemd-analyze --version | head -n 1))"

total=$((${#nix_files[@]} + 3 + ${#units[@]}))
echo "nix-check: $((total - failures)) passed, $failures failed"
if ((failures > 0)); then
    exit 1
fi
