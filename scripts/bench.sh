#!/usr/bin/env bash
# Benchmarks against the local test bed (run through `just bench`, which builds the static
# binaries and starts the test bed). Prints a table and writes BENCHMARKS.md.
#   --smoke   small counts, written to target/BENCHMARKS-smoke.md (CI keeps this working)
set -euo pipefail
cd "$(dirname "$0")/.."

smoke=0
[ "${1:-}" = "--smoke" ] && smoke=1
if [ $smoke = 1 ]; then
  events=5000 targets=50 seconds=5 runs=5 publish_events=5000 rounds=1 out=target/BENCHMARKS-smoke.md
else
  events=200000 targets=1000 seconds=30 runs=50 publish_events=200000 rounds=5 out=BENCHMARKS.md
fi
port=${CHECKSITE_BENCH_PORT:-18700}
musl=x86_64-unknown-linux-musl
bin=target/$musl/release
# shellcheck disable=SC1091
source "${CHECKSITE_TESTBED_DIR:-/tmp/checksite-testbed}/env"

echo "==> building bench_tools (examples/bench_tools.rs)" >&2
cargo build --release --locked --target $musl --example bench_tools >&2
tools=$bin/examples/bench_tools
work=$(mktemp -d /tmp/checksite-bench.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
stamp=$(date +%s)
# Mutual TLS, as users run it against Aiven: the consumer, the producer and bench_tools.
kafka=$CK_TEST_KAFKA_SSL
export CK_KAFKA_SSL="$CK_TEST_CERTS/ca.pem $CK_TEST_CERTS/service.cert $CK_TEST_CERTS/service.key"
psql_admin() { PGOPTIONS="-c client_min_messages=warning" psql -qAt "$CK_TEST_POSTGRES_URL" "$@"; }
# "%e %U %S %M" from /usr/bin/time (its last line: a failing command adds one before it):
# wall s, user s, sys s, max RSS KiB
timed() { /usr/bin/time -f "%e %U %S %M" -o "$work/time" "$@"; }
verdict() {
  # The targets are for the full counts; a smoke run only shows that everything still runs.
  if [ $smoke = 1 ]; then echo "(smoke)"; return; fi
  awk -v v="$1" -v t="$2" -v dir="$3" 'BEGIN { ok = (dir == "ge") ? (v >= t) : (v <= t); print ok ? "met" : "MISSED" }'
}

# ---- 1. consumer throughput, and raw COPY of the same rows
# Rounds of (consumer drain, raw COPY) back to back; the medians of each are reported, so
# that one noisy moment on a shared machine does not decide the ratio.
echo "==> consumer: $events events over 6 partitions, $rounds round(s)" >&2
topic=bench-consume-$stamp
$tools fill-topic "$kafka" "$topic" 6 "$events"
cols="ts, url, elapsed, error, status, body_prefix, content_match, check_id, error_kind, dns_ms, connect_ms, tls_ms, ttfb_ms, bytes, cert_expires_at, ip, body_sha256, schedule_lag_ms, producer, kafka_partition, kafka_offset"
c_rss=0
for round in $(seq 1 "$rounds"); do
  db=bench_consume_${stamp}_$round
  psql_admin -c "CREATE DATABASE $db"
  db_url=${CK_TEST_POSTGRES_URL/\/postgres\?//$db?}
  CK_KAFKA_SERVERS=$kafka CK_KAFKA_TOPIC=$topic CK_POSTGRESQL_URL=$db_url CK_LOG_LEVEL=warn \
    timed "$bin/checksite-consumer" --drain >/dev/null
  read -r wall _ _ rss < <(tail -n 1 "$work/time")
  stored=$(psql -qAt "$db_url" -c "SELECT count(*) FROM events")
  [ "$stored" = "$events" ] || { echo "error: $stored rows stored for $events events" >&2; exit 1; }
  echo "$wall" >>"$work/consumer-walls"
  if [ "$rss" -gt "$c_rss" ]; then c_rss=$rss; fi
  # The ceiling: PostgreSQL's own binary COPY of the same rows, from a file, into a table
  # with the same columns and indexes, in the same database, right after.
  copy_file=/tmp/checksite-bench-$stamp.copy
  psql -qAt "$db_url" -c "COPY (SELECT $cols FROM events) TO '$copy_file' (FORMAT binary)"
  psql -qAt "$db_url" -c "CREATE TABLE events_raw (LIKE events INCLUDING ALL)"
  psql -qAt "$db_url" -c '\timing on' -c "COPY events_raw ($cols) FROM '$copy_file' (FORMAT binary)" |
    sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | tail -n 1 >>"$work/copy-ms"
  rm -f "$copy_file" 2>/dev/null || true
  psql_admin -c "DROP DATABASE $db" || true
done
median() { sort -n "$1" | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
c_wall=$(median "$work/consumer-walls")
copy_ms=$(median "$work/copy-ms")
c_rate=$(awk -v n="$events" -v t="$c_wall" 'BEGIN { printf "%.0f", n / t }')
copy_rate=$(awk -v n="$events" -v ms="$copy_ms" 'BEGIN { printf "%.0f", n / (ms / 1000) }')
ratio=$(awk -v a="$c_rate" -v b="$copy_rate" 'BEGIN { printf "%.0f", 100 * a / b }')
c_walls=$(sort -n "$work/consumer-walls" | paste -sd/ -)
copy_all=$(sort -n "$work/copy-ms" | awk '{ printf "%s%.0f", (NR > 1 ? "/" : ""), $1 }')

# ---- 2. producer: many targets at a 1 s interval against a local site
echo "==> producer: $targets targets at 1 s for $seconds s" >&2
$tools serve "$port" &
pids+=($!)
sleep 0.5
{
  echo "["
  for i in $(seq 1 "$targets"); do
    sep=","; [ "$i" = "$targets" ] && sep=""
    echo "{\"url\": \"http://127.0.0.1:$port/site/$i\", \"interval_s\": 1}$sep"
  done
  echo "]"
} >"$work/targets.json"
ptopic=bench-produce-$stamp
CK_KAFKA_SERVERS=$kafka CK_KAFKA_TOPIC=$ptopic CK_TARGETS=$work/targets.json CK_CONCURRENCY=64 CK_LOG_LEVEL=warn \
  timed timeout -s TERM "$seconds" "$bin/checksite-producer" || true
read -r p_wall p_user p_sys p_rss < <(tail -n 1 "$work/time")
read -r p_count p_span p_p50 p_p99 < <($tools topic-stats "$kafka" "$ptopic")
p_rate=$(awk -v n="$p_count" -v t="$p_wall" 'BEGIN { printf "%.0f", n / t }')
p_cpu=$(awk -v u="$p_user" -v s="$p_sys" -v t="$p_wall" 'BEGIN { printf "%.0f", 100 * (u + s) / t }')

echo "==> publishing alone: $publish_events events" >&2
read -r pub_n pub_secs < <($tools publish "$kafka" "bench-publish-$stamp" "$publish_events")
pub_rate=$(awk -v n="$pub_n" -v t="$pub_secs" 'BEGIN { printf "%.0f", n / t }')

# ---- 4. sizes
size_kib() { echo $(($(stat -c %s "$1") / 1024)); }
prod_kib=$(size_kib "$bin/checksite-producer")
cons_kib=$(size_kib "$bin/checksite-consumer")
image="(podman not installed)" image_verdict=""
if command -v podman >/dev/null; then
  conf=$work/containers.conf
  printf '[containers]\ndefault_ulimits = []\n' >"$conf"
  if CONTAINERS_CONF=$conf scripts/image.sh >/dev/null 2>&1; then
    image_kib=$(($(CONTAINERS_CONF=$conf podman image inspect checksite:latest --format '{{.Size}}') / 1024))
    image="$image_kib KiB"
    image_verdict=$(verdict "$image_kib" 9765 le)
  fi
fi

# ---- 5. start-up: --once against the local site, median of many runs
echo "==> --once wall time, $runs runs" >&2
for _ in $(seq 1 "$runs"); do
  s=$(date +%s%N)
  "$bin/checksite-producer" --once "http://127.0.0.1:$port/" >/dev/null
  e=$(date +%s%N)
  echo $(((e - s) / 1000))
done | sort -n >"$work/once"
once_ms=$(awk '{ a[NR] = $1 } END { printf "%.1f", a[int((NR + 1) / 2)] / 1000 }' "$work/once")

cores=$(nproc)
mem=$(free -g | awk '/^Mem:/ { print $2 " GiB" }')
cpu=$(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n 1)

table=$(
  cat <<EOF
| figure | measured | target | |
|---|---|---|---|
| consumer throughput (\`--drain\`, $events events, 6 partitions; median of $rounds, walls $c_walls s) | $c_rate events/s | ≥ 100,000 | $(verdict "$c_rate" 100000 ge) |
| raw binary \`COPY ... FROM\` file, same rows and indexes (median of $rounds: $copy_all ms) | $copy_rate rows/s | | |
| consumer / raw COPY (medians) | $ratio % | ≥ 65 % | $(verdict "$ratio" 65 ge) |
| producer checks/s ($targets targets at 1 s, ${seconds} s) | $p_rate | ~$targets | |
| producer schedule lateness p50 / p99 | $p_p50 ms / $p_p99 ms | p99 ≤ 50 ms | $(verdict "$p_p99" 50 le) |
| producer CPU | $p_cpu % of one core | | |
| producer peak RSS, $targets targets | $((p_rss / 1024)) MiB ($p_rss KiB) | ≤ 20 MB | $(verdict "$p_rss" 19531 le) |
| publish alone ($publish_events events) | $pub_rate events/s | | |
| consumer peak RSS at full speed | $((c_rss / 1024)) MiB ($c_rss KiB) | ≤ 40 MB | $(verdict "$c_rss" 39062 le) |
| checksite-producer static binary | $prod_kib KiB | ≤ 5 MB | $(verdict "$prod_kib" 4882 le) |
| checksite-consumer static binary | $cons_kib KiB | ≤ 5 MB | $(verdict "$cons_kib" 4882 le) |
| image | $image | ≤ 10 MB | $image_verdict |
| \`--once\` wall time, local site (median of $runs) | $once_ms ms | ≤ 20 ms | $(verdict "$once_ms" 20 le) |
EOF
)

{
  echo "# checksite benchmarks"
  echo
  echo "Measured by \`just bench\` ($([ $smoke = 1 ] && echo "smoke run, small counts" || echo "full run")) on $(date -u +%Y-%m-%d):"
  echo "$cores cores ($cpu), $mem, Kafka $(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' scripts/testbed/pom.xml) and"
  echo "PostgreSQL $(psql_admin -c 'SHOW server_version' | cut -d' ' -f1) on the same machine (the test bed: TLS to PostgreSQL, mutual TLS to Kafka)."
  echo "These machines are shared: compare ratios within one run rather than absolute figures across runs."
  echo
  echo "$table"
  echo
  echo "Producer: the site is \`bench_tools serve\` on 127.0.0.1 (a new TCP connection per check,"
  echo "as in production); checks/s counts events that reached the topic over the run's wall time"
  echo "(start-up and shutdown included). Lateness is \`schedule_lag_ms\` of every event."
  echo "Consumer throughput is events / wall time of the whole \`--drain\` run (start-up, migration"
  echo "and leases included), median of $rounds rounds, each followed by the raw COPY of the rows it"
  echo "stored; peak RSS is the highest of the rounds. MB = 10^6 bytes in the targets."
} >"$out"
echo "$table"
echo "written to $out" >&2
