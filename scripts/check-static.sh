#!/usr/bin/env bash
# Fails unless every binary given is statically linked (no ELF interpreter, no shared
# libraries) and at most 5 MiB: copying one to a host, or an image of both, stays small.
set -euo pipefail
max_bytes=$((5 * 1024 * 1024))
for bin in "$@"; do
  [ -f "$bin" ] || { echo "error: $bin was not built" >&2; exit 1; }
  if readelf -l "$bin" | grep -q "Requesting program interpreter" || readelf -d "$bin" | grep -q "(NEEDED)"; then
    echo "error: $bin is dynamically linked" >&2
    exit 1
  fi
  desc=$(command -v file >/dev/null && file -b "$bin" | cut -d, -f1-5 || echo "static (readelf)")
  size=$(stat -c %s "$bin")
  printf '%-60s %8s KiB  %s\n' "$bin" "$((size / 1024))" "$desc"
  if [ "$size" -gt "$max_bytes" ]; then
    echo "error: $bin is $((size / 1024)) KiB, over the 5 MiB (5120 KiB) limit" >&2
    exit 1
  fi
done
