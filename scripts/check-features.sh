#!/usr/bin/env bash
# Checks that every library crate builds with no default features and with each feature alone
# (what `cargo hack check --each-feature` does, without needing cargo-hack installed).
set -euo pipefail
cd "$(dirname "$0")/.."
# Runs `cargo check`, failing on any warning (without RUSTFLAGS, which would rebuild every dependency).
check() {
  local crate=$1; shift
  echo "-- $crate $*"
  local out
  out=$(cargo check -q -p "$crate" "$@" 2>&1) || { echo "$out"; exit 1; }
  if grep -q '^warning' <<<"$out"; then echo "$out"; echo "warnings in $crate $*"; exit 1; fi
}

for manifest in archon-*/Cargo.toml; do
  crate=$(dirname "$manifest")
  # Feature names: keys of the [features] table, minus `default` and private `_x` ones.
  features=$(awk '/^\[/{f=($0=="[features]")} f && /^[a-z0-9][a-z0-9_-]* *=/{sub(/ *=.*/,""); print}' "$manifest" \
    | grep -v -e '^default$' -e '^_' || true)
  check "$crate" --no-default-features
  for f in $features; do
    check "$crate" --no-default-features --features "$f"
  done
done
