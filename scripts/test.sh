#!/usr/bin/env bash
# Runs every test of the workspace against real servers: first makes sure the servers are up
# (scripts/services.sh), then the unit, integration and doc tests of every crate, all features.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/services.sh

if cargo nextest --version >/dev/null 2>&1; then
  # nextest runs no doctests: run them first, so the run closes on nextest's summary.
  cargo test --workspace --all-features --doc
  cargo nextest run --workspace --all-features --no-fail-fast
else
  cargo test --workspace --all-features --no-fail-fast
fi
