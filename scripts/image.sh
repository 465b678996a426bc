#!/usr/bin/env bash
# Builds the FROM scratch image `checksite:VERSION` (and :latest) from the static binaries.
# Usage: scripts/image.sh [podman build flags...]
set -euo pipefail
cd "$(dirname "$0")/.."
command -v podman >/dev/null || { echo "error: podman is missing (Debian/Ubuntu: apt-get install podman)" >&2; exit 1; }
bin=target/x86_64-unknown-linux-musl/release
for b in checksite-producer checksite-consumer; do
  [ -x "$bin/$b" ] || { echo "error: $bin/$b is missing: run 'just build-static' first" >&2; exit 1; }
done
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
rm -rf target/image && mkdir -p target/image
cp "$bin/checksite-producer" "$bin/checksite-consumer" target/image/
podman build "$@" -f Containerfile -t "checksite:$version" -t checksite:latest target/image >&2
size=$(podman image inspect checksite:latest --format '{{.Size}}')
echo "checksite:$version  $((size / 1024)) KiB"
