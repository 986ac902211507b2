#!/usr/bin/env bash
# Installs the real servers that sluice's end-to-end tests and benchmarks run
# (see crates/sluice-testkit): Prometheus + promtool (Debian package
# `prometheus`), memcached, redis-server, moto's S3 server (PyPI
# `moto[server]`), openssl (throwaway certificates for the TLS tests), Go
# (`golang-go`: `go tool pprof` reads sluice's CPU profile) and chromium
# (the status page's browser test).
# Safe to run repeatedly; runs as root (no sudo).
#
# The tests start their own private instances on free loopback ports, so the
# packaged system services must NOT be left running: they would hold the
# default ports and scrape/store data nobody asked for.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

if [ "$(id -u)" -ne 0 ]; then
    echo "install-test-deps.sh: must run as root (no sudo is used)" >&2
    exit 1
fi

missing=()
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
# promtool ships in the same Debian package as prometheus.
if ! command -v promtool >/dev/null 2>&1 && [[ ! " ${missing[*]-} " == *" prometheus "* ]]; then
    missing+=(prometheus)
fi
command -v memcached >/dev/null 2>&1 || missing+=(memcached)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
# TLS tests make throwaway certificates with the openssl command.
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
# The pprof test checks sluice's CPU profile with Go's own reader.
command -v go >/dev/null 2>&1 || missing+=(golang-go)
# The status page is tested in a real headless browser.
command -v chromium >/dev/null 2>&1 || missing+=(chromium)

if [ "${#missing[@]}" -gt 0 ]; then
    echo "install-test-deps.sh: installing ${missing[*]}"
    # A policy-rc.d that exits 101 tells invoke-rc.d not to start services
    # from maintainer scripts. Only add ours if none exists (Docker images
    # usually ship one) and remove only what we created.
    policy=/usr/sbin/policy-rc.d
    created_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 0755 "$policy"
        created_policy=1
    fi
    cleanup() {
        if [ "$created_policy" -eq 1 ]; then rm -f "$policy"; fi
    }
    trap cleanup EXIT

    apt-get update
    apt-get install -y --no-install-recommends "${missing[@]}"

    cleanup
    trap - EXIT
fi

# Belt and braces: on hosts with systemd (where policy-rc.d may be ignored) or
# from an earlier install, the packaged services could be running. Stop them;
# the tests run their own instances. The init scripts stop by pidfile, and the
# pkill fallback is limited to the package's service users (`prometheus`,
# `memcache`, `redis`), so test instances running right now as another user survive.
for svc in prometheus memcached redis-server; do
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        systemctl disable --now "$svc" >/dev/null 2>&1 || true
    fi
    if command -v service >/dev/null 2>&1; then
        service "$svc" stop >/dev/null 2>&1 || true
    fi
done
if id prometheus >/dev/null 2>&1; then pkill -x -u prometheus prometheus >/dev/null 2>&1 || true; fi
if id memcache >/dev/null 2>&1; then pkill -x -u memcache memcached >/dev/null 2>&1 || true; fi
if id redis >/dev/null 2>&1; then pkill -x -u redis redis-server >/dev/null 2>&1 || true; fi

# moto's S3 server for sluice-bucket's S3 tests, from PyPI. Installed only
# when missing; a failed install stops the script (set -e) rather than
# leaving the S3 tests to fail later with a less obvious message.
if ! python3 -c 'import moto.server' >/dev/null 2>&1; then
    echo "install-test-deps.sh: installing moto[server] from PyPI"
    if ! python3 -m pip install --quiet 'moto[server]'; then
        echo "install-test-deps.sh: FAILED to install moto[server] (python3 -m pip)" >&2
        exit 1
    fi
fi

echo "install-test-deps.sh: versions"
prometheus --version 2>&1 | head -n 1
promtool --version 2>&1 | head -n 1
memcached --version
redis-server --version
python3 -c 'import moto; print("moto", moto.__version__)'
go version
chromium --version
