#!/usr/bin/env bash
# Runs sluice's whole test suite: unit tests, the end-to-end tests against a
# real Prometheus, memcached and Redis (installed first if missing), and the
# PromQL conformance suite from ../shared/promqltest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-test-deps.sh
cargo test --workspace --locked "$@"
