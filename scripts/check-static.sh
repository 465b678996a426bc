#!/usr/bin/env bash
# Fails unless every binary given is statically linked (no ELF interpreter, no shared libraries).
set -euo pipefail
for bin in "$@"; do
  [ -f "$bin" ] || { echo "error: $bin was not built" >&2; exit 1; }
  if readelf -l "$bin" | grep -q "Requesting program interpreter" || readelf -d "$bin" | grep -q "(NEEDED)"; then
    echo "error: $bin is dynamically linked" >&2
    exit 1
  fi
  desc=$(command -v file >/dev/null && file -b "$bin" | cut -d, -f1-5 || echo "static (readelf)")
  printf '%-60s %8s KiB  %s\n' "$bin" "$(( $(stat -c %s "$bin") / 1024 ))" "$desc"
done
