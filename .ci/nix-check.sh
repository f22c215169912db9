#!/usr/bin/env bash
# Static checks of the Nix files and the plain systemd units.
#
#   1. every .nix file in the repository parses (nix-instantiate --parse);
#   2. every unit in nix/units/ passes `systemd-analyze verify` with no output
#      at all: verify exits 0 on many warnings, so any line it prints fails.
#
# verify also checks that each Exec*= binary exists and is executable. The units
# name their real install paths (/usr/local/bin/...), which do not exist on a CI
# machine, so the units are verified unmodified inside a throw-away root
# (--root): the host's own unit tree is copied into it, and a stub executable is
# created at each path an Exec*= line names. Nothing in the units is rewritten.
#
# Installs nix-bin and systemd from Debian when they are missing (CI runs as
# root). Run from anywhere inside the repository.
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

# 2. Verify the plain units in a throw-away root.
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT

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

total=$((${#nix_files[@]} + ${#units[@]}))
echo "nix-check: $((total - failures)) passed, $failures failed"
if ((failures > 0)); then
    exit 1
fi
