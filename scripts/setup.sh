#!/usr/bin/env bash
# Idempotent project setup: system packages (apt) + .venv with the package
# installed editable with its test extras. Safe to run repeatedly; a second
# run skips apt entirely when every package is already installed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

log() { printf '[setup] %s\n' "$*"; }

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    SUDO=(sudo)
fi

# --- system packages --------------------------------------------------------
mapfile -t PACKAGES < <(sed -e 's/#.*//' -e 's/[[:space:]]\+/\n/g' scripts/apt-packages.txt | grep -v '^$')

missing=()
for pkg in "${PACKAGES[@]}"; do
    status="$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)"
    if [ "$status" != "install ok installed" ]; then
        missing+=("$pkg")
    fi
done

if [ "${#missing[@]}" -eq 0 ]; then
    log "apt: all ${#PACKAGES[@]} packages already installed"
else
    log "apt: missing ${missing[*]}"
    # Keep maintainer scripts from starting services (sshd, libvirtd) on
    # hosts/containers without systemd: policy-rc.d exit 101 = "not allowed".
    created_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee /usr/sbin/policy-rc.d >/dev/null
        "${SUDO[@]}" chmod 0755 /usr/sbin/policy-rc.d
        created_policy=1
    fi
    cleanup_policy() {
        if [ "$created_policy" -eq 1 ]; then
            "${SUDO[@]}" rm -f /usr/sbin/policy-rc.d
        fi
    }
    trap cleanup_policy EXIT

    # Another apt/dpkg run may be in progress (e.g. unattended upgrades):
    # wait for it instead of failing on the lock. Scans /proc so it works on
    # minimal images without procps.
    apt_busy() {
        local c
        for c in /proc/[0-9]*/comm; do
            case "$(cat "$c" 2>/dev/null)" in
                apt|apt-get|aptitude|dpkg|unattended-upgr) return 0 ;;
            esac
        done
        return 1
    }
    waited=0
    while apt_busy; do
        if [ "$waited" -eq 0 ]; then log "apt: waiting for another apt/dpkg process"; fi
        if [ "$waited" -ge 900 ]; then log "apt: still busy after ${waited}s, trying anyway"; break; fi
        sleep 5; waited=$((waited + 5))
    done
    apt_opts=(-o DPkg::Lock::Timeout=600)
    log "apt: apt-get update"
    "${SUDO[@]}" apt-get "${apt_opts[@]}" update -qq
    log "apt: installing ${#missing[@]} missing packages"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get "${apt_opts[@]}" install -y -q --no-install-recommends "${missing[@]}"

    cleanup_policy
    trap - EXIT
    log "apt: done"
fi

# --- python venv ------------------------------------------------------------
if [ ! -x .venv/bin/python ]; then
    log "venv: creating .venv"
    python3 -m venv .venv
else
    log "venv: .venv exists"
fi
log "venv: upgrading pip"
.venv/bin/python -m pip install -q --upgrade pip
log "venv: pip install -e '.[test]'"
.venv/bin/pip install -q -e '.[test]'
log "done"
