#!/usr/bin/env bash
# Checks that every library crate builds with no default features and with each feature alone
# (what `cargo hack check --each-feature` does, without needing cargo-hack installed).
set -euo pipefail
cd "$(dirname "$0")/.."
crates=$(cargo metadata --no-deps --format-version 1 | python3 -c '
import json, sys
meta = json.load(sys.stdin)
for p in meta["packages"]:
    if p["name"].startswith("archon-"):
        feats = [f for f in p["features"] if f != "default" and not f.startswith("_")]
        print(p["name"] + ":" + ",".join(feats))
')
for line in $crates; do
  crate=${line%%:*}; feats=${line#*:}
  echo "-- $crate (no default features)"
  cargo check -q -p "$crate" --no-default-features
  IFS=, read -ra list <<<"$feats"
  for f in "${list[@]}"; do
    [[ -z "$f" ]] && continue
    echo "-- $crate --features $f"
    cargo check -q -p "$crate" --no-default-features --features "$f"
  done
done
