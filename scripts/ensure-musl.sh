#!/usr/bin/env bash
# Prerequisites of the static build: the Rust musl target and musl-gcc (ring compiles a
# little C). Installs them when it can (rustup; apt-get as root), says what to do otherwise.
set -euo pipefail
target=x86_64-unknown-linux-musl
if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
  command -v rustup >/dev/null || { echo "error: rustup is missing: install Rust with rustup, then run: rustup target add $target" >&2; exit 1; }
  echo "installing the Rust target $target" >&2
  rustup target add "$target"
fi
if ! command -v musl-gcc >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing musl-tools (musl-gcc)" >&2
    apt-get install -y -qq musl-tools >/dev/null || { apt-get update -qq && apt-get install -y -qq musl-tools >/dev/null; }
  else
    echo "error: musl-gcc is missing: install it (Debian/Ubuntu: sudo apt-get install musl-tools)" >&2
    exit 1
  fi
fi
