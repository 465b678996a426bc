#!/usr/bin/env bash
# Installs what building, testing and the demo need and a fresh Debian/Ubuntu machine
# lacks: system packages (apt, as root), the Rust musl target, rustfmt/clippy and `just`.
# Safe to run again: it only installs what is missing.
set -euo pipefail
export PATH="$HOME/.cargo/bin:$HOME/.local/bin:/usr/local/bin:$PATH"

missing=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v psql >/dev/null || missing+=(postgresql-client)
command -v musl-gcc >/dev/null || missing+=(musl-tools)
command -v mvn >/dev/null || missing+=(maven)
command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
command -v openssl >/dev/null || missing+=(openssl)
command -v file >/dev/null || missing+=(file)
command -v curl >/dev/null || missing+=(curl)
command -v readelf >/dev/null || missing+=(binutils)
command -v python3 >/dev/null || missing+=(python3)
[ -x /usr/bin/time ] || missing+=(time)
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v pip >/dev/null || command -v pip3 >/dev/null || missing+=(python3-pip)
# python3-requests (with curl): the reference clients of the HTTP verdict test; Debian's
# python3 is the one that test runs (/usr/bin/python3), whatever else is on the PATH.
/usr/bin/python3 -c 'import requests' 2>/dev/null || missing+=(python3-requests)
# podman runs the image test (`just test`) and builds the image (`just image`).
command -v podman >/dev/null || missing+=(podman)
command -v runc >/dev/null || missing+=(runc)
# apt_install [APT_FLAGS...] -- PACKAGES...: as root, install them and stop the services
# Debian starts with them (a PostgreSQL cluster on 5432, a Prometheus on 9090...): the test
# bed, the tests and the bench run their own, on ports of their own.
apt_install() {
  local flags=()
  while [ "$1" != "--" ]; do flags+=("$1"); shift; done
  shift
  [ $# -gt 0 ] || return 0
  if [ "$(id -u)" != 0 ]; then
    echo "error: missing packages: $*: install them (sudo apt-get install ${flags[*]} $*) or run this as root" >&2
    exit 1
  fi
  echo "installing: $*"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${flags[@]}" "$@" >/dev/null
  for service in postgresql prometheus prometheus-blackbox-exporter prometheus-alertmanager; do
    if [[ " $* " == *" $service "* ]]; then
      service "$service" stop >/dev/null 2>&1 || true
    fi
  done
}
apt_install -- "${missing[@]}"

# prometheus and promtool: the metrics test scrapes both programs with a real Prometheus;
# prometheus-blackbox-exporter: `just bench` sets its CPU per probe beside ours. Without
# recommends (the node exporter and more, unused here).
missing=()
command -v promtool >/dev/null || missing+=(prometheus)
command -v prometheus-blackbox-exporter >/dev/null || missing+=(prometheus-blackbox-exporter)
# chromium: the status page test loads the page in a real (headless) browser.
command -v chromium >/dev/null || missing+=(chromium)
# kcat (librdkafka): the oracle for the Java partitioner in the producer's Kafka test.
command -v kcat >/dev/null || missing+=(kcat)
# htpasswd (apache2-utils): writes the bcrypt hashes of the CK_HTTP_CONFIG test, as users do.
command -v htpasswd >/dev/null || missing+=(apache2-utils)
# The alert receivers' test: a real Alertmanager, and a local SMTP server (aiosmtpd).
command -v prometheus-alertmanager >/dev/null || missing+=(prometheus-alertmanager)
/usr/bin/python3 -c 'import aiosmtpd' 2>/dev/null || missing+=(python3-aiosmtpd)
# librdkafka's Python client: the reference transactional producer (commits and aborts)
# of the consumer's transactions test.
/usr/bin/python3 -c 'import confluent_kafka' 2>/dev/null || missing+=(python3-confluent-kafka)
apt_install --no-install-recommends -- "${missing[@]}"

command -v rustup >/dev/null || { echo "error: rustup is missing: install Rust from rustup.rs" >&2; exit 1; }
rustup component add rustfmt clippy >/dev/null 2>&1 || true
rustup target list --installed | grep -qx x86_64-unknown-linux-musl || rustup target add x86_64-unknown-linux-musl
if ! command -v just >/dev/null; then
  echo "installing just"
  pip install --quiet --break-system-packages rust-just 2>/dev/null || pip install --quiet rust-just 2>/dev/null ||
    cargo install just --locked
fi
echo "prerequisites: ok (just $(just --version | cut -d' ' -f2))"
