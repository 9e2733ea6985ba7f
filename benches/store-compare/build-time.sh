#!/usr/bin/env bash
# Clean release build time of each candidate alone, and the crates it pulls in.
# Usage: ./build-time.sh [runs=2]   (builds under /tmp/bt-*, nice'd, fresh target dir each)
set -euo pipefail
runs=${1:-2}
for dep in 'fjall = "=3.1.13"' 'redb = "=5.0.0"'; do
  name=${dep%% *}
  d=/tmp/bt-$name
  rm -rf "$d"; mkdir -p "$d/src"
  printf '[package]\nname = "bt-%s"\nversion = "0.0.0"\nedition = "2021"\n\n[workspace]\n\n[dependencies]\n%s\n' "$name" "$dep" > "$d/Cargo.toml"
  echo "pub use $name;" > "$d/src/lib.rs"
  (cd "$d" && cargo generate-lockfile -q)
  crates=$(cd "$d" && cargo tree -q --prefix none -e normal,build | sed 's/ (\*)//' | sort -u | grep -v '^bt-' | wc -l)
  echo "== $name: $crates crates (itself + transitive deps, normal+build)"
  (cd "$d" && cargo tree -q --prefix none -e normal,build | sed 's/ (\*)//' | sort -u | grep -v '^bt-' | tr '\n' ' '); echo
  for r in $(seq 1 "$runs"); do
    rm -rf "$d/target"
    echo "-- run $r, load $(cut -d' ' -f1-3 /proc/loadavg)"
    ( cd "$d" && export CARGO_TARGET_DIR="$d/target" && { time nice -n 10 cargo build --release -q ; } 2>&1 ) | grep -E 'real|user|sys'
  done
done
