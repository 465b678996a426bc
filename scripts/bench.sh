#!/usr/bin/env bash
# Benchmarks against the local test bed (run through `just bench`, which builds the static
# binaries and starts the test bed). Prints a table and writes BENCHMARKS.md.
#   --smoke   small counts, written to target/BENCHMARKS-smoke.md (CI keeps this working)
set -euo pipefail
cd "$(dirname "$0")/.."

smoke=0
[ "${1:-}" = "--smoke" ] && smoke=1
if [ $smoke = 1 ]; then
  events=5000 targets=50 seconds=5 prounds=1 runs=5 publish_events=5000 rounds=1 out=target/BENCHMARKS-smoke.md
  page_sites=20 page_days=2 page_big_sites=50 ret_rows=100000 list_targets=200 churn_targets=50 churn=10 churn_every=2
  scale_targets="100" https_targets=20 probes=100 spool_targets=100 replay_events=5000
  fold_warm=3 fold_window=5
else
  events=200000 targets=1000 seconds=20 prounds=3 runs=50 publish_events=100000 rounds=5 out=BENCHMARKS.md
  page_sites=1000 page_days=30 page_big_sites=10000 ret_rows=10000000 list_targets=10000 churn_targets=5000 churn=1000 churn_every=10
  scale_targets="2000 5000 7500 10000 12500 15000" https_targets=300 probes=3000
  spool_targets=10000 replay_events=1000000
  fold_warm=10 fold_window=20
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
# Scrape http://127.0.0.1:$1/metrics every second until killed; one line per scrape:
# seconds, bytes (curl's view: the server's time plus loopback).
scrape_every_second() {
  while true; do
    curl -s -o /dev/null -w '%{time_total} %{size_download}\n' "http://127.0.0.1:$1/metrics" || true
    sleep 1
  done
}
metrics_port=$((port + 1))
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
cols="ts, url, elapsed, error, status, body_prefix, content_match, check_id, error_kind, dns_ms, connect_ms, tls_ms, ttfb_ms, bytes, cert_expires_at, ip, body_sha256, schedule_lag_ms, producer, up, kafka_partition, kafka_offset"
c_rss=0
# The drain with the defaults (rollups on) into $db, and the same without the rollups
# (CK_ROLLUPS=off: what keeping them costs) into ${db}_norollups.
drain_default() {
  CK_KAFKA_SERVERS=$kafka CK_KAFKA_TOPIC=$topic CK_POSTGRESQL_URL=$db_url CK_LOG_LEVEL=warn \
    timed "$bin/checksite-consumer" --drain >/dev/null
  read -r wall user sys rss < <(tail -n 1 "$work/time")
  # The consumer's own CPU per event (user + sys of the process), in µs.
  awk -v u="$user" -v s="$sys" -v n="$events" 'BEGIN { printf "%.2f\n", (u + s) * 1e6 / n }' >>"$work/consumer-us"
  stored=$(psql -qAt "$db_url" -c "SELECT count(*) FROM events")
  [ "$stored" = "$events" ] || { echo "error: $stored rows stored for $events events" >&2; exit 1; }
  echo "$wall" >>"$work/consumer-walls"
  if [ "$rss" -gt "$c_rss" ]; then c_rss=$rss; fi
}
drain_without_rollups() {
  psql_admin -c "CREATE DATABASE ${db}_norollups"
  CK_KAFKA_SERVERS=$kafka CK_KAFKA_TOPIC=$topic CK_POSTGRESQL_URL=${db_url/$db/${db}_norollups} CK_LOG_LEVEL=warn \
    CK_ROLLUPS=off timed "$bin/checksite-consumer" --drain >/dev/null
  read -r wall user sys _ < <(tail -n 1 "$work/time")
  echo "$wall" >>"$work/consumer-norollup-walls"
  awk -v u="$user" -v s="$sys" -v n="$events" 'BEGIN { printf "%.2f\n", (u + s) * 1e6 / n }' >>"$work/consumer-norollup-us"
  psql_admin -c "DROP DATABASE ${db}_norollups" || true
}
# The same drain into a second database, with CK_HTTP_ADDR scraped every second.
drain_scraped() {
  psql_admin -c "CREATE DATABASE ${db}_scraped"
  scrape_every_second "$metrics_port" >>"$work/consumer-scrapes" &
  scraper=$!
  CK_KAFKA_SERVERS=$kafka CK_KAFKA_TOPIC=$topic CK_POSTGRESQL_URL=${db_url/$db/${db}_scraped} CK_LOG_LEVEL=warn \
    CK_HTTP_ADDR=127.0.0.1:$metrics_port timed "$bin/checksite-consumer" --drain >/dev/null
  kill $scraper 2>/dev/null || true
  wait $scraper 2>/dev/null || true
  read -r wall _ _ _ < <(tail -n 1 "$work/time")
  echo "$wall" >>"$work/consumer-scraped-walls"
  psql_admin -c "DROP DATABASE ${db}_scraped" || true
}
# The same drain with alerting on (its states read and written in every transaction;
# one check in 7 fails, so they change often; nothing is decided, so nothing is sent).
drain_alerts() {
  psql_admin -c "CREATE DATABASE ${db}_alerts"
  CK_KAFKA_SERVERS=$kafka CK_KAFKA_TOPIC=$topic CK_POSTGRESQL_URL=${db_url/$db/${db}_alerts} CK_LOG_LEVEL=warn \
    CK_ALERT_WEBHOOK_URL=http://127.0.0.1:$((port + 5))/hook timed "$bin/checksite-consumer" --drain >/dev/null
  read -r wall _ _ _ < <(tail -n 1 "$work/time")
  echo "$wall" >>"$work/consumer-alerts-walls"
  psql_admin -c "DROP DATABASE ${db}_alerts" || true
}
# The same drain with 100 maintenance windows in force, over 100 of the 1,000 URLs (their
# checks are counted apart in the rollups; every event is looked up against the windows).
drain_maint() {
  psql_admin -c "CREATE DATABASE ${db}_maint"
  for i in $(seq 0 99); do
    CK_POSTGRESQL_URL=${db_url/$db/${db}_maint} CK_LOG_LEVEL=warn "$bin/checksite-consumer" maintenance add \
      --url "https://site-$i.example/" --from "$(date -u -d '-1 hour' +%Y-%m-%dT%H:%M:%SZ)" --for 3h --reason bench >/dev/null
  done
  CK_KAFKA_SERVERS=$kafka CK_KAFKA_TOPIC=$topic CK_POSTGRESQL_URL=${db_url/$db/${db}_maint} CK_LOG_LEVEL=warn \
    timed "$bin/checksite-consumer" --drain >/dev/null
  read -r wall _ _ _ < <(tail -n 1 "$work/time")
  echo "$wall" >>"$work/consumer-maint-walls"
  in_maint=$(psql -qAt "${db_url/$db/${db}_maint}" -c "SELECT coalesce(sum(maint_checks), 0) FROM rollups_daily")
  echo "$in_maint" >"$work/consumer-maint-checks"
  psql_admin -c "DROP DATABASE ${db}_maint" || true
}
# Each round runs the five drains in a rotated order (round r starts with the r-th), so
# that each comes first, second, ... once in five rounds: in a fixed order a drain's place
# went into its ratio (the scraped drain, third, the default's work plus a scrape a second,
# ran 0.03-0.28 s slower than the default in all 5 rounds of one run).
drains=(drain_default drain_without_rollups drain_scraped drain_alerts drain_maint)
for round in $(seq 1 "$rounds"); do
  db=bench_consume_${stamp}_$round
  psql_admin -c "CREATE DATABASE $db"
  db_url=${CK_TEST_POSTGRES_URL/\/postgres\?//$db?}
  for i in $(seq 0 $((${#drains[@]} - 1))); do
    "${drains[$(((round - 1 + i) % ${#drains[@]}))]}"
  done
  # The ceiling: PostgreSQL's own binary COPY of the same rows, from a file, into a table
  # with the same columns and indexes, in the same database, right after.
  copy_file=/tmp/checksite-bench-$stamp.copy
  psql -qAt "$db_url" -c "COPY (SELECT $cols FROM events) TO '$copy_file' (FORMAT binary)"
  psql -qAt "$db_url" -c "CREATE TABLE events_raw (LIKE events INCLUDING ALL)"
  psql -qAt "$db_url" -c '\timing on' -c "COPY events_raw ($cols) FROM '$copy_file' (FORMAT binary)" |
    sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | tail -n 1 >>"$work/copy-ms"
  # What a client gets: the same COPY sent by psql (libpq) over TLS, as the consumer
  # connects, into a third table: the ceiling for any client on this machine.
  psql -qAt "$db_url" -c "CREATE TABLE events_client (LIKE events INCLUDING ALL)"
  psql -qAt "$db_url" -c '\timing on' -c "\\copy events_client ($cols) FROM '$copy_file' (FORMAT binary)" |
    sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | tail -n 1 >>"$work/client-copy-ms"
  rm -f "$copy_file" 2>/dev/null || true
  psql_admin -c "DROP DATABASE $db" || true
done
median() { sort -n "$1" | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
c_wall=$(median "$work/consumer-walls")
copy_ms=$(median "$work/copy-ms")
c_rate=$(awk -v n="$events" -v t="$c_wall" 'BEGIN { printf "%.0f", n / t }')
copy_rate=$(awk -v n="$events" -v ms="$copy_ms" 'BEGIN { printf "%.0f", n / (ms / 1000) }')
ratio=$(awk -v a="$c_rate" -v b="$copy_rate" 'BEGIN { printf "%.0f", 100 * a / b }')
cs_wall=$(median "$work/consumer-scraped-walls")
cs_rate=$(awk -v n="$events" -v t="$cs_wall" 'BEGIN { printf "%.0f", n / t }')
cs_ratio=$(awk -v a="$cs_rate" -v b="$c_rate" 'BEGIN { printf "%.0f", 100 * a / b }')
cn_wall=$(median "$work/consumer-norollup-walls")
cn_rate=$(awk -v n="$events" -v t="$cn_wall" 'BEGIN { printf "%.0f", n / t }')
rollup_ratio=$(awk -v a="$c_rate" -v b="$cn_rate" 'BEGIN { printf "%.0f", 100 * a / b }')
ca_wall=$(median "$work/consumer-alerts-walls")
ca_rate=$(awk -v n="$events" -v t="$ca_wall" 'BEGIN { printf "%.0f", n / t }')
alert_ratio=$(awk -v a="$ca_rate" -v b="$c_rate" 'BEGIN { printf "%.0f", 100 * a / b }')
cm_wall=$(median "$work/consumer-maint-walls")
cm_rate=$(awk -v n="$events" -v t="$cm_wall" 'BEGIN { printf "%.0f", n / t }')
maint_ratio=$(awk -v a="$cm_rate" -v b="$c_rate" 'BEGIN { printf "%.0f", 100 * a / b }')
cm_checks=$(cat "$work/consumer-maint-checks")
c_walls=$(sort -n "$work/consumer-walls" | paste -sd/ -)
c_us=$(median "$work/consumer-us")
cn_us=$(median "$work/consumer-norollup-us")
copy_all=$(sort -n "$work/copy-ms" | awk '{ printf "%s%.0f", (NR > 1 ? "/" : ""), $1 }')
client_ms=$(median "$work/client-copy-ms")
client_rate=$(awk -v n="$events" -v ms="$client_ms" 'BEGIN { printf "%.0f", n / (ms / 1000) }')
client_ratio=$(awk -v a="$c_rate" -v b="$client_rate" 'BEGIN { printf "%.0f", 100 * a / b }')
client_of_raw=$(awk -v a="$client_rate" -v b="$copy_rate" 'BEGIN { printf "%.0f", 100 * a / b }')
client_all=$(sort -n "$work/client-copy-ms" | awk '{ printf "%s%.0f", (NR > 1 ? "/" : ""), $1 }')

# ---- 2. producer: many targets at a 1 s interval against a local site
$tools serve "$port" &
pids+=($!)
sleep 0.5
# targets_file N [BASE_URL]: N targets at 1 s on the local site; prints the file's path.
targets_file() {
  local base=${2:-http://127.0.0.1:$port} file=$work/targets-$1-$RANDOM.json
  python3 -c 'import json, sys; n, base = int(sys.argv[1]), sys.argv[2]
print(json.dumps([{"url": f"{base}/site/{i}", "interval_s": 1} for i in range(n)]))' "$1" "$base" >"$file"
  echo "$file"
}
# producer_run TARGETS_FILE|- [HTTP_PORT]: one run of $seconds s (-: no CK_TARGETS); appends
# "wall user sys rss_kib count span p50 p99" to $work/runs.
producer_run() {
  local vars=() topic=bench-produce-$stamp-$RANDOM$RANDOM
  [ "$1" != - ] && vars+=("CK_TARGETS=$1")
  [ -n "${2:-}" ] && vars+=("CK_HTTP_ADDR=127.0.0.1:$2")
  CK_KAFKA_SERVERS=$kafka CK_KAFKA_TOPIC=$topic CK_CONCURRENCY=64 CK_LOG_LEVEL=warn \
    timed env "${vars[@]}" timeout -s TERM "$seconds" "$bin/checksite-producer" || true
  echo "$(tail -n 1 "$work/time") $($tools topic-stats "$kafka" "$topic")" >>"$work/runs"
}
# summarize: over the runs in $work/runs (then emptied), "checks/s p50 p99 cpu% rss_kib
# us_cpu_per_check": medians, and the highest RSS.
summarize() {
  awk '{ rate[NR] = $5 / $1; p50[NR] = $7; p99[NR] = $8; cpu[NR] = 100 * ($2 + $3) / $1
         us[NR] = 1e6 * ($2 + $3) / ($5 > 0 ? $5 : 1); if ($4 > rss) rss = $4 }
    function med(a, n,   i, j, t) { for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
      return a[int((n + 1) / 2)] }
    END { printf "%.0f %d %d %.0f %d %.0f\n", med(rate, NR), med(p50, NR), med(p99, NR), med(cpu, NR), rss, med(us, NR) }' "$work/runs"
  : >"$work/runs"
}
# Rounds of (plain, scraped every second) back to back: one noisy moment decides nothing.
file=$(targets_file "$targets")
: >"$work/runs" && : >"$work/runs-scraped"
for round in $(seq 1 "$prounds"); do
  echo "==> producer: $targets targets at 1 s for $seconds s, round $round of $prounds (plain, then scraped)" >&2
  producer_run "$file"
  (sleep 2 && scrape_every_second "$metrics_port") >>"$work/producer-scrapes" &
  scraper=$!
  producer_run "$file" "$metrics_port"
  kill $scraper 2>/dev/null || true
  wait $scraper 2>/dev/null || true
  tail -n 1 "$work/runs" >>"$work/runs-scraped"
  sed -i '$ d' "$work/runs"
done
read -r p_rate p_p50 p_p99 p_cpu p_rss p_us < <(summarize)
cp "$work/runs-scraped" "$work/runs"
read -r ps_rate ps_p50 ps_p99 ps_cpu ps_rss _ < <(summarize)
# A scrape of the producer at $targets targets: median and worst time, and its size.
read -r scrape_ms scrape_max_ms scrape_kib scrapes < <(awk '$2 > 0 { print $1 * 1000, $2 }' "$work/producer-scrapes" |
  sort -n | awk '{ t[NR] = $1; b = $2 } END { printf "%.1f %.1f %d %d\n", t[int((NR + 1) / 2)], t[NR], b / 1024, NR }')

# ---- 3. producer at scale: the knee (the most targets at 1 s with p99 lateness <= 50 ms)
knee=0 scale_rows=""
for n in $scale_targets; do
  echo "==> producer at scale: $n targets at 1 s for $seconds s" >&2
  producer_run "$(targets_file "$n")"
  read -r rate p50 p99 _ rss us < <(summarize)
  share=$(awk -v r="$rate" -v n="$n" 'BEGIN { printf "%.0f", 100 * r / n }')
  [ "$p99" -le 50 ] && [ "$share" -ge 95 ] && knee=$n
  scale_rows+="| producer, $n targets at 1 s | $rate checks/s ($share % of scheduled), lateness p50 / p99 $p50 / $p99 ms, $us µs CPU per check, RSS $((rss / 1024)) MiB | | |"$'\n'
  [ "$n" = 5000 ] && s5_share=$share s5_p99=$p99 s5_us=$us
  [ "$n" = 10000 ] && s10_rss=$rss
done

# ---- the spool: $spool_targets targets at 1 s with Kafka down (nothing listens on its port),
# memory only and then with CK_SPOOL_DIR; the producer's own histogram of schedule lateness,
# scraped 1 s before it is killed (-9: at SIGTERM it would wait for Kafka). Then a spool
# holding $replay_events events, published when the producer starts with Kafka up.
# spool_run TARGETS_FILE [SPOOL_DIR]: prints "checks on_time_% p99_ms us_per_check rss_kib
# dropped spool_mib": checks made, the share with lateness <= 50 ms, the p99 interpolated in
# its bucket (as PromQL's histogram_quantile), CPU (user + sys) per check, peak RSS, events
# dropped, the spool's size.
spool_run() {
  local vars=() mport=$((port + 9))
  [ -n "${2:-}" ] && vars+=("CK_SPOOL_DIR=$2")
  (sleep $((seconds - 1)) && curl -s "http://127.0.0.1:$mport/metrics" >"$work/spool-metrics") &
  local scraper=$!
  CK_KAFKA_SERVERS=127.0.0.1:$((port + 8)) CK_KAFKA_TOPIC=bench-spool CK_CONCURRENCY=64 CK_LOG_LEVEL=error \
    CK_HTTP_ADDR=127.0.0.1:$mport CK_TARGETS=$1 timed env "${vars[@]}" timeout --foreground -s KILL "$seconds" "$bin/checksite-producer" || true
  wait $scraper || true
  read -r _ user sys rss < <(tail -n 1 "$work/time")
  awk -v user="$user" -v sys="$sys" -v rss="$rss" -v secs="$seconds" '
    /^checksite_producer_checks_total/ { checks += $NF }
    /^checksite_producer_events_dropped_total/ { dropped += $NF }
    /^checksite_producer_spool_bytes/ { spool = $NF }
    /^checksite_producer_schedule_lateness_seconds_bucket/ {
      match($0, /le="[^"]*"/); le = substr($0, RSTART + 4, RLENGTH - 5)
      n++; les[n] = (le == "+Inf") ? -1 : le + 0; cum[n] = $NF }
    /^checksite_producer_schedule_lateness_seconds_count/ { count = $NF }
    END {
      rank = 0.99 * count; p99 = 0; prev_le = 0; prev = 0; ontime = 0
      for (i = 1; i <= n; i++) if (les[i] == 0.05) ontime = cum[i]
      for (i = 1; i <= n; i++) {
        if (cum[i] >= rank) { p99 = (les[i] < 0) ? prev_le : prev_le + (les[i] - prev_le) * (rank - prev) / (cum[i] - prev); break }
        prev_le = les[i]; prev = cum[i]
      }
      # The CPU is of the whole run; the checks of all but its last second: scaled to it.
      per = (checks > 0) ? 1e6 * (user + sys) / (checks * secs / (secs - 1)) : 0
      printf "%d %.1f %.0f %.0f %d %d %.0f\n", checks, count ? 100 * ontime / count : 0, 1000 * p99, per, rss, dropped, spool / 1048576 }' \
    "$work/spool-metrics"
}
spool_file=$(targets_file "$spool_targets")
# Rounds of (memory only, spooled) back to back, medians of each column: near the knee of
# this machine one noisy moment moves the lateness more than the spool does.
: >"$work/spool-off" && : >"$work/spool-on"
for round in $(seq 1 "$prounds"); do
  echo "==> spool: $spool_targets targets at 1 s with Kafka down for $seconds s, memory only then spooled, round $round of $prounds" >&2
  spool_run "$spool_file" >>"$work/spool-off"
  spool_run "$spool_file" "$work/spool-dir" >>"$work/spool-on"
  rm -rf "$work/spool-dir"
done
column_medians() { # column_medians FILE: the median of each column
  awk '{ for (i = 1; i <= NF; i++) v[i, NR] = $i; if (NF > nf) nf = NF }
    END { for (i = 1; i <= nf; i++) { n = 0; for (r = 1; r <= NR; r++) a[++n] = v[i, r]
        for (x = 1; x <= n; x++) for (y = x + 1; y <= n; y++) if (a[y] < a[x]) { t = a[x]; a[x] = a[y]; a[y] = t }
        printf "%s%s", a[int((n + 1) / 2)], (i < nf ? " " : "\n") } }' "$1"
}
read -r sm_checks sm_ontime sm_p99 sm_us sm_rss sm_dropped _ < <(column_medians "$work/spool-off")
read -r ss_checks ss_ontime ss_p99 ss_us ss_rss ss_dropped ss_mib < <(column_medians "$work/spool-on")
spool_ontimes="$(cut -d' ' -f2 "$work/spool-off" | paste -sd/ -) % / $(cut -d' ' -f2 "$work/spool-on" | paste -sd/ -) %"
sm_share=$(awk -v c="$sm_checks" -v n="$spool_targets" -v s="$seconds" 'BEGIN { printf "%.0f", 100 * c / (n * (s - 1)) }')
ss_share=$(awk -v c="$ss_checks" -v n="$spool_targets" -v s="$seconds" 'BEGIN { printf "%.0f", 100 * c / (n * (s - 1)) }')
spool_cpu_ratio=$(awk -v a="$ss_us" -v b="$sm_us" 'BEGIN { printf "%.0f", (b > 0 ? 100 * a / b : 0) }')
echo "==> spool: $replay_events spooled events published at start" >&2
replay_bytes=$($tools fill-spool "$work/replay-spool" "$replay_events")
echo "[{\"url\": \"http://127.0.0.1:$port/site/0\", \"interval_s\": 3600}]" >"$work/replay-target.json"
replay_start=$(date +%s%N)
CK_KAFKA_SERVERS=$kafka CK_KAFKA_TOPIC=bench-replay-$stamp CK_LOG_LEVEL=warn CK_HTTP_ADDR=127.0.0.1:$((port + 9)) \
  CK_TARGETS=$work/replay-target.json CK_SPOOL_DIR=$work/replay-spool "$bin/checksite-producer" >/dev/null 2>&1 &
replay_pid=$!
pids+=("$replay_pid")
replay_ms=""
for _ in $(seq 1 6000); do
  published=$(curl -s "http://127.0.0.1:$((port + 9))/metrics" | awk '/^checksite_producer_events_published_total/ { n += $NF } END { print n + 0 }')
  if [ "$published" -ge "$replay_events" ]; then
    replay_ms=$((($(date +%s%N) - replay_start) / 1000000))
    break
  fi
  sleep 0.1
done
[ -n "$replay_ms" ] || { echo "error: the spooled events were not published within 600 s ($published of $replay_events)" >&2; exit 1; }
replay_rss=$(awk '/^VmHWM/ { print $2 }' "/proc/$replay_pid/status")
replay_cpu=$(awk -v hz="$(getconf CLK_TCK)" '{ printf "%.1f", ($14 + $15) / hz }' "/proc/$replay_pid/stat")
kill -TERM "$replay_pid" 2>/dev/null || true
wait "$replay_pid" 2>/dev/null || true
replay_rate=$(awk -v n="$replay_events" -v ms="$replay_ms" 'BEGIN { printf "%.0f", n / (ms / 1000) }')
rm -rf "$work/replay-spool"

# ---- the targets topic: `targets put` of $list_targets targets (time to write it), and the
# time from its return until a producer following the topic has checked every one of them
echo "==> targets topic: put $list_targets targets, followed by a producer" >&2
list=bench-list-$stamp
topic=bench-list-events-$stamp
CK_KAFKA_SERVERS=$kafka CK_KAFKA_TOPIC=$topic CK_TARGETS_TOPIC=$list CK_CONCURRENCY=64 CK_LOG_LEVEL=error \
  "$bin/checksite-producer" &
follower=$!
pids+=($follower)
sleep 2
CK_KAFKA_SERVERS=$kafka CK_TARGETS_TOPIC=$list timed "$bin/checksite-producer" targets put "$(targets_file "$list_targets")" >/dev/null
put_s=$(awk '{ print $1 }' "$work/time")
put_done=$(date +%s.%N)
all_checked_s="(not within 120 s)"
deadline=$((SECONDS + 120))
while [ $SECONDS -lt $deadline ]; do
  seen=$($tools topic-stats "$kafka" "$topic" | awk '{ print $5 }')
  if [ "${seen:-0}" -ge "$list_targets" ]; then
    all_checked_s=$(awk -v a="$put_done" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f s", b - a }')
    break
  fi
  sleep 0.5
done
kill $follower 2>/dev/null || true

# A producer following $churn_targets targets at 1 s while $churn of them change (their regex)
# every $churn_every s: checks/s, lateness, CPU per check, RSS.
echo "==> targets topic: $churn_targets targets at 1 s, $churn changing every $churn_every s, for $seconds s" >&2
list=bench-churn-$stamp
churn_list() { # churn_list ROUND: the list, the first $churn targets' regex naming the round
  local file=$work/churn-$1.json
  python3 -c 'import json, sys; n, k, r, base = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
print(json.dumps([dict({"url": f"{base}/site/{i}", "interval_s": 1}, **({"regex": f"round{r}|ok"} if i < k else {})) for i in range(n)]))' \
    "$churn_targets" "$churn" "$1" "http://127.0.0.1:$port" >"$file"
  echo "$file"
}
CK_KAFKA_SERVERS=$kafka CK_TARGETS_TOPIC=$list "$bin/checksite-producer" targets put "$(churn_list 0)" >/dev/null
( round=1; while true; do
    sleep "$churn_every"
    CK_KAFKA_SERVERS=$kafka CK_TARGETS_TOPIC=$list "$bin/checksite-producer" targets put "$(churn_list $round)" >/dev/null
    round=$((round + 1))
  done ) &
churner=$!
pids+=($churner)
CK_TARGETS_TOPIC=$list producer_run -
kill $churner 2>/dev/null || true
read -r churn_rate _ churn_p99 _ churn_rss churn_us < <(summarize)

echo "==> producer: $https_targets HTTPS targets at 1 s (a full TLS handshake per check)" >&2
tls_port=$((port + 2))
$tools serve-tls "$tls_port" "$CK_TEST_CERTS/server.cert" "$CK_TEST_CERTS/server.key" &
pids+=($!)
sleep 0.5
CK_SITE_CA=$CK_TEST_CERTS/ca.pem producer_run "$(targets_file "$https_targets" "https://localhost:$tls_port")"
read -r tls_rate _ tls_p99 _ _ tls_us < <(summarize)

echo "==> prometheus-blackbox-exporter: $probes probes of the same site through /probe" >&2
bb_cpu_us="(not installed)"
if command -v prometheus-blackbox-exporter >/dev/null; then
  bb_port=$((port + 3))
  printf 'modules:\n  http_2xx:\n    prober: http\n    timeout: 5s\n' >"$work/blackbox.yml"
  prometheus-blackbox-exporter --config.file="$work/blackbox.yml" --web.listen-address="127.0.0.1:$bb_port" >/dev/null 2>&1 &
  bb=$!
  pids+=($bb)
  sleep 1
  probe_url="http://127.0.0.1:$bb_port/probe?module=http_2xx&target=http://127.0.0.1:$port/site"
  curl -s "$probe_url/0" | grep -qx 'probe_success 1' || { echo "error: the blackbox exporter's probe failed" >&2; exit 1; }
  for i in $(seq 1 "$probes"); do printf 'url = "%s/%d"\noutput = "/dev/null"\n' "$probe_url" "$i"; done >"$work/probes.cfg"
  ticks() { awk '{ print $14 + $15 }' "/proc/$bb/stat"; }
  before=$(ticks)
  curl -s -Z --parallel-max 8 -K "$work/probes.cfg" >/dev/null 2>&1 || true
  after=$(ticks)
  bb_cpu_us=$(awk -v a="$before" -v b="$after" -v n="$probes" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.0f µs", 1e6 * (b - a) / hz / n }')
  kill $bb 2>/dev/null || true
fi

# ---- alerts: from the deciding check to the receiver, $targets targets at 1 s, one in 10 flapping
alert_port=$((port + 5))
alert_file=$work/targets-alerts.json
python3 -c 'import json, sys; n, base = int(sys.argv[1]), sys.argv[2]
print(json.dumps([{"url": f"{base}/flap/{i}" if i % 10 == 0 else f"{base}/site/{i}", "interval_s": 1} for i in range(n)]))' \
  "$targets" "http://127.0.0.1:$port" >"$alert_file"
# alert_run RECEIVERS ENV...: a consumer alerting with ENV (its receivers), fed by a producer
# for 2 x $seconds s; RECEIVERS webhook receivers (bench_tools receive-alerts) listen on
# $alert_port and up. Prints "decided deliveries p50 p99 worst" (ms) over all their deliveries.
alert_run() {
  local receivers=$1 db=bench_alerts_${stamp}_$RANDOM topic=bench-alerts-$stamp-$RANDOM rpids=() i
  shift
  for i in $(seq 0 $((receivers - 1))); do
    $tools receive-alerts $((alert_port + i)) >"$work/alert-latencies-$i" &
    rpids+=($!)
    pids+=($!)
  done
  psql_admin -c "CREATE DATABASE $db"
  local url=${CK_TEST_POSTGRES_URL/\/postgres\?//$db?}
  env CK_KAFKA_SERVERS="$kafka" CK_KAFKA_TOPIC="$topic" CK_POSTGRESQL_URL="$url" CK_LOG_LEVEL=warn \
    "$@" "$bin/checksite-consumer" >/dev/null 2>&1 &
  local consumer=$!
  pids+=("$consumer")
  CK_KAFKA_SERVERS=$kafka CK_KAFKA_TOPIC=$topic CK_TARGETS=$alert_file CK_LOG_LEVEL=warn \
    timeout -s TERM $((seconds * 2)) "$bin/checksite-producer" >/dev/null 2>&1 || true
  sleep 3
  kill -TERM "$consumer" "${rpids[@]}" 2>/dev/null || true
  wait "$consumer" 2>/dev/null || true
  local decided
  decided=$(psql -qAt "$url" -c "SELECT count(DISTINCT id) FROM alert_outbox")
  cat "$work"/alert-latencies-* | sort -n | awk -v d="$decided" '{ a[NR] = $1 }
    END { if (NR == 0) { print d, 0, 0, 0, 0; exit }
      printf "%d %d %d %d %d\n", d, NR, a[int((NR + 1) / 2)], a[int(NR * 0.99 + 0.999)], a[NR] }'
  rm -f "$work"/alert-latencies-*
  psql_admin -c "DROP DATABASE $db" || true
}
echo "==> alerts: $targets targets at 1 s, one in 10 down 10 s out of 20, for $((seconds * 2)) s" >&2
read -r alert_decided alert_n alert_p50 alert_p99 alert_max < <(alert_run 1 CK_ALERT_WEBHOOK_URL=http://127.0.0.1:$alert_port/hook)
# The same with three receivers, one of which accepts and never answers: the two others'
# latency is what a receiver that is down costs the healthy ones.
echo "==> alerts: the same with three receivers, one hanging" >&2
$tools hang $((alert_port + 2)) &
hang_pid=$!
pids+=("$hang_pid")
python3 -c 'import json, sys; p = int(sys.argv[1])
print(json.dumps([{"name": n, "url": f"http://127.0.0.1:{p + i}/hook", "format": "json"} for i, n in enumerate(["first", "second", "hanging"])]))' \
  "$alert_port" >"$work/receivers.json"
read -r alert3_decided alert3_n alert3_p50 alert3_p99 alert3_max < <(alert_run 2 CK_ALERT_RECEIVERS="$work/receivers.json")
kill "$hang_pid" 2>/dev/null || true

# ---- end to end: $targets targets at 1 s through the producer, Kafka (mutual TLS) and the
# consumer with its defaults. Each row's latency is from its check's `checked_at` (`ts`) to
# its transaction's commit, as PostgreSQL recorded it (pg_xact_commit_timestamp: the test
# bed keeps commit timestamps), one clock. Then the consumer is killed (-9) and started again
# 5 times mid-run: from each start to the first commit of a new row.
echo "==> end to end: $targets targets at 1 s, producer -> Kafka -> consumer, then 5 restarts" >&2
[ "$(psql_admin -c 'SHOW track_commit_timestamp')" = on ] ||
  { echo "error: the test bed's PostgreSQL predates track_commit_timestamp: just services stop, then again" >&2; exit 1; }
e2e_db=bench_e2e_$stamp
psql_admin -c "CREATE DATABASE $e2e_db"
e2e_url=${CK_TEST_POSTGRES_URL/\/postgres\?//$e2e_db?}
e2e_topic=bench-e2e-$stamp
e2e_consumer() {
  CK_KAFKA_SERVERS=$kafka CK_KAFKA_TOPIC=$e2e_topic CK_POSTGRESQL_URL=$e2e_url CK_LOG_LEVEL=warn \
    "$bin/checksite-consumer" >/dev/null 2>&1 &
  e2e_pid=$!
  pids+=("$e2e_pid")
}
CK_KAFKA_SERVERS=$kafka CK_KAFKA_TOPIC=$e2e_topic CK_TARGETS=$(targets_file "$targets") CK_LOG_LEVEL=warn \
  "$bin/checksite-producer" >/dev/null 2>&1 &
e2e_producer=$!
pids+=("$e2e_producer")
e2e_consumer
sleep $((seconds + 3))
# The steady window: from 3 s after the start (the first checks and the topic's creation
# are start-up) to now.
e2e_steady_until=$(date -u +%Y-%m-%dT%H:%M:%S.%NZ)
: >"$work/e2e-starts"
for _ in 1 2 3 4 5; do
  kill -KILL "$e2e_pid" 2>/dev/null || true
  wait "$e2e_pid" 2>/dev/null || true
  date -u +%Y-%m-%dT%H:%M:%S.%NZ >>"$work/e2e-starts"
  e2e_consumer
  sleep 3
done
kill -TERM "$e2e_producer" 2>/dev/null || true
wait "$e2e_producer" 2>/dev/null || true
sleep 2
kill -TERM "$e2e_pid" 2>/dev/null || true
wait "$e2e_pid" 2>/dev/null || true
read -r e2e_n e2e_p50 e2e_p99 e2e_max < <(psql -qAt -F ' ' "$e2e_url" -c "
  WITH l AS (SELECT extract(epoch FROM pg_xact_commit_timestamp(xmin) - (ts AT TIME ZONE 'UTC')) * 1000 AS ms
    FROM events WHERE ts AT TIME ZONE 'UTC' > (SELECT min(ts) AT TIME ZONE 'UTC' FROM events) + interval '3 s'
      AND ts AT TIME ZONE 'UTC' < '$e2e_steady_until'::timestamptz - interval '1 s')
  SELECT count(*), round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)),
    round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)), round(max(ms)) FROM l")
: >"$work/e2e-restart-ms"
while read -r started; do
  psql -qAt "$e2e_url" -c "SELECT round(extract(epoch FROM min(c) - '$started'::timestamptz) * 1000)
    FROM (SELECT pg_xact_commit_timestamp(xmin) AS c FROM events) AS x WHERE c > '$started'::timestamptz" \
    >>"$work/e2e-restart-ms"
done <"$work/e2e-starts"
e2e_restart=$(median "$work/e2e-restart-ms")
e2e_restarts=$(sort -n "$work/e2e-restart-ms" | paste -sd/ -)
psql_admin -c "DROP DATABASE $e2e_db" || true

# ---- the folds in the steady state: N targets at 1 s through the producer and the consumer
# (defaults); over 20 s after 10 s of warm-up (5 after 3 in a smoke run), from the consumer's /metrics: how many folds
# ended, their time (its share of the wall time: a fold runs on one PostgreSQL backend)
# and the transactions' (the events' writes). A fold updates each series once, so its time
# grows with the series; past 0.25 s the folds spread out to a quarter of the time.
fold_figures() {
  { curl -s "http://127.0.0.1:$metrics_port/metrics" || true; } | awk '
    /^checksite_consumer_rollup_fold_duration_seconds_count/ { c = $NF }
    /^checksite_consumer_rollup_fold_duration_seconds_sum/ { s = $NF }
    /^checksite_consumer_transaction_duration_seconds_sum/ { t = $NF }
    END { print c + 0, s + 0, t + 0 }'
}
fold_steady() { # fold_steady N: prints "folds fold_s tx_s wall_s"
  local n=$1 db=bench_folds_${stamp}_$1 topic=bench-folds-$stamp-$1 a b t0 t1 p c
  psql_admin -c "CREATE DATABASE $db"
  CK_KAFKA_SERVERS=$kafka CK_KAFKA_TOPIC=$topic CK_TARGETS=$(targets_file "$n") CK_LOG_LEVEL=warn \
    "$bin/checksite-producer" >/dev/null 2>&1 &
  p=$!
  pids+=("$p")
  CK_KAFKA_SERVERS=$kafka CK_KAFKA_TOPIC=$topic CK_POSTGRESQL_URL=${CK_TEST_POSTGRES_URL/\/postgres\?//$db?} \
    CK_LOG_LEVEL=warn CK_HTTP_ADDR=127.0.0.1:$metrics_port "$bin/checksite-consumer" >/dev/null 2>&1 &
  c=$!
  pids+=("$c")
  sleep "$fold_warm"
  a=$(fold_figures) t0=$(date +%s.%N)
  sleep "$fold_window"
  b=$(fold_figures) t1=$(date +%s.%N)
  kill -TERM "$p" "$c" 2>/dev/null || true
  wait "$p" "$c" 2>/dev/null || true
  psql_admin -c "DROP DATABASE $db" || true
  echo "$a $b $t0 $t1" | awk '{ printf "%d %.2f %.2f %.2f\n", $4 - $1, $5 - $2, $6 - $3, $8 - $7 }'
}
fold_row() { # fold_row N: the table's cells for fold_steady N
  echo "==> folds in the steady state: $1 targets at 1 s" >&2
  fold_steady "$1" | awk '{ printf "%d folds, %.0f %% of the time (%.2f s each) / %.0f %%\n", $1, 100 * $2 / $4, ($1 > 0 ? $2 / $1 : 0), 100 * $3 / $4 }'
}
folds_1k=$(fold_row "$targets")
folds_10k=$(fold_row $((targets * 10)))

# ---- retention: $ret_rows events over 60 days, CK_RETENTION_DAYS=30; a writer alone, and
# the same writer while the old half is deleted
echo "==> retention: $ret_rows events over 60 days, half past a 30-day window" >&2
ret_db=bench_retention_$stamp
psql_admin -c "CREATE DATABASE $ret_db"
ret_url=${CK_TEST_POSTGRES_URL/\/postgres\?//$ret_db?}
ret_topic=bench-ret-$stamp
$tools fill-topic "$kafka" "$ret_topic" 1 1
CK_KAFKA_SERVERS=$kafka CK_KAFKA_TOPIC=$ret_topic CK_POSTGRESQL_URL=$ret_url CK_LOG_LEVEL=warn \
  "$bin/checksite-consumer" --drain >/dev/null
# Appended in time order, as a consumer leaves them.
psql -qAt "$ret_url" -c "INSERT INTO events (ts, url, elapsed, status, producer, up, kafka_partition, kafka_offset)
  SELECT (now() AT TIME ZONE 'UTC') - interval '60 days' + i * (interval '60 days' / $ret_rows),
    'https://site-' || (i % 1000) || '.example/', 40 + i % 200, 200, 'bench', true, 99, i
  FROM generate_series(1, $ret_rows) i" -c "VACUUM ANALYZE events"
ret_size_before=$(psql -qAt "$ret_url" -c "SELECT pg_total_relation_size('events') / 1048576")
ret_writer() { # ret_writer TOPIC: drain it into the retention database; prints events/s
  CK_KAFKA_SERVERS=$kafka CK_KAFKA_TOPIC=$1 CK_POSTGRESQL_URL=$ret_url CK_LOG_LEVEL=warn \
    timed "$bin/checksite-consumer" --drain >/dev/null
  awk -v n="$events" -v t="$(tail -n 1 "$work/time" | cut -d' ' -f1)" 'BEGIN { printf "%.0f", n / t }'
}
$tools fill-topic "$kafka" "$ret_topic-during" 6 "$events"
ret_alone=$(ret_writer "$topic")
CK_KAFKA_SERVERS=$kafka CK_KAFKA_TOPIC=$ret_topic CK_POSTGRESQL_URL=$ret_url CK_LOG_LEVEL=info \
  CK_RETENTION_DAYS=30 "$bin/checksite-consumer" 2>"$work/pruner.log" &
pruner=$!
pids+=("$pruner")
sleep 4 # the first pass starts 1 s after start-up: the writer runs in the middle of it
ret_during=$(ret_writer "$ret_topic-during")
for _ in $(seq 1 1800); do grep -q "events vacuumed" "$work/pruner.log" && break; sleep 1; done
kill -TERM "$pruner" 2>/dev/null || true
wait "$pruner" 2>/dev/null || true
read -r ret_deleted ret_delete_ms < <(sed -n 's/.*retention: \([0-9]*\) event(s) from before .* deleted in \([0-9]*\) ms.*/\1 \2/p' "$work/pruner.log" | head -n 1)
ret_vacuum_ms=$(sed -n 's/.*events vacuumed in \([0-9]*\) ms.*/\1/p' "$work/pruner.log" | head -n 1)
ret_size_after=$(psql -qAt "$ret_url" -c "SELECT pg_total_relation_size('events') / 1048576")
ret_left_old=$(psql -qAt "$ret_url" -c "SELECT count(*) FROM events WHERE ts < (now() AT TIME ZONE 'UTC') - interval '30 days'")
ret_ratio=$(awk -v a="$ret_during" -v b="$ret_alone" 'BEGIN { printf "%.0f", 100 * a / b }')
# The steady state: the freed space refilled with rows of the last day, then a consumer's
# passes: the first (a sweep by ts, as every pass was before) and the next ones (in
# insertion order), each logged (debug) with what it deleted (rows age past the window as
# the bench runs) and its time.
echo "==> retention: the freed space refilled, then 3 passes" >&2
half=$((ret_rows / 2))
psql -qAt "$ret_url" -c "INSERT INTO events (ts, url, elapsed, status, producer, up, kafka_partition, kafka_offset)
  SELECT (now() AT TIME ZONE 'UTC') - interval '1 day' + i * (interval '1 day' / $half),
    'https://site-' || (i % 1000) || '.example/', 40 + i % 200, 200, 'bench', true, 98, i
  FROM generate_series(1, $half) i"
ret_steady_rows=$(psql -qAt "$ret_url" -c "SELECT count(*) FROM events")
ret_steady_mib=$(psql -qAt "$ret_url" -c "SELECT pg_total_relation_size('events') / 1048576")
CK_KAFKA_SERVERS=$kafka CK_KAFKA_TOPIC=$ret_topic CK_POSTGRESQL_URL=$ret_url CK_LOG_LEVEL=debug \
  CK_RETENTION_DAYS=30 "$bin/checksite-consumer" 2>"$work/steady.log" &
steady=$!
pids+=("$steady")
for _ in $(seq 1 120); do [ "$(grep -c 'insertion-order pass' "$work/steady.log")" -ge 2 ] && break; sleep 1; done
kill -TERM "$steady" 2>/dev/null || true
wait "$steady" 2>/dev/null || true
pass_figures() { # pass_figures KIND: "rows ms" of each such pass, one per line
  sed -n "s/.*retention: $1 pass: \([0-9]*\) event(s) deleted in \([0-9.]*\) ms.*/\1 \2/p" "$work/steady.log"
}
ret_sweep=$(pass_figures "sweep (by ts)" | head -n 1 | awk '{ printf "%s ms (%s rows deleted)", $2, $1 }')
ret_passes=$(pass_figures insertion-order | awk '{ printf "%s%s ms (%s rows)", (NR > 1 ? ", " : ""), $2, $1 }')
ret_pass_max=$(pass_figures insertion-order | awk '$2 > m { m = $2 } END { printf "%.0f", m }')
psql_admin -c "DROP DATABASE $ret_db" || true

# ---- status page: SITES sites x VANTAGE vantage points x DAYS days of rollups
# page_bench SITES VANTAGE DAYS HOURLY_DAYS: fills a database with that history (every hour
# of HOURLY_DAYS days, every day of DAYS days; a latency spread over 7 buckets; one site in
# 7 with failures; one in 50 down from one vantage point), starts a consumer serving the
# page, and sets page_* to what it measured: the first read after start; /, /?q=, a site
# page and /api/status (median of 5 requests 2.1 s apart: each is served the last read and
# starts the next beside); 50 clients at once on / and on /api/status (wall time of all of
# them, and the consumer's CPU meanwhile); the consumer's peak RSS.
page_bench() {
  local sites=$1 vantage=$2 days=$3 hourly_days=$4
  echo "==> status page: $sites sites x $vantage vantage points x $days days of history" >&2
  local topic=bench-page-$stamp-$sites db=bench_page_${stamp}_$sites
  $tools fill-topic "$kafka" "$topic" 1 1
  psql_admin -c "CREATE DATABASE $db"
  local url=${CK_TEST_POSTGRES_URL/\/postgres\?//$db?}
  CK_KAFKA_SERVERS=$kafka CK_KAFKA_TOPIC=$topic CK_POSTGRESQL_URL=$url CK_LOG_LEVEL=warn \
    "$bin/checksite-consumer" --drain >/dev/null
  local hist="ARRAY[0,0,0,0,0,0,0,10,200,1500,1200,500,150,30,8,2,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0]::bigint[]"
  psql -qAt "$url" <<SQL
TRUNCATE rollups_hourly, rollups_daily, site_status, series_windows, series_windows_at; -- the migrating drain's one event
INSERT INTO rollups_hourly (url, producer, bucket, checks, up_checks, error_kinds, latency_hist,
  latency_min_ms, latency_max_ms, latency_sum_ms, last_checked_at, last_status)
SELECT 'https://site-' || s || '.example/', 'vantage-' || v, h, 3630, CASE WHEN s % 7 = 0 THEN 3600 ELSE 3630 END,
  CASE WHEN s % 7 = 0 THEN '{0,30,0,0,0,0,0,0}' ELSE '{0,0,0,0,0,0,0,0}' END::bigint[], $hist,
  9, 700, 3600 * 40, h + interval '59 minutes', 200
FROM generate_series(1, $sites) s, generate_series(1, $vantage) v,
  generate_series(date_trunc('hour', now()) - interval '$hourly_days days', date_trunc('hour', now()), interval '1 hour') h;
INSERT INTO rollups_daily (url, producer, bucket, checks, up_checks, error_kinds, latency_hist,
  latency_min_ms, latency_max_ms, latency_sum_ms, last_checked_at, last_status)
SELECT 'https://site-' || s || '.example/', 'vantage-' || v, d, 87120, CASE WHEN s % 7 = 0 THEN 86400 ELSE 87120 END,
  '{0,0,0,0,0,0,0,0}', (SELECT array_agg(x * 24) FROM unnest($hist) x), 9, 700, 86400 * 40, d + interval '23 hours', 200
FROM generate_series(1, $sites) s, generate_series(1, $vantage) v,
  generate_series(date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' - interval '$days days',
    date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', interval '1 day') d;
INSERT INTO site_status (url, producer, up, since, last_checked_at, last_status, last_error,
  last_error_kind, last_elapsed_ms, cert_expires_at)
SELECT 'https://site-' || s || '.example/', 'vantage-' || v, NOT (s % 50 = 0 AND v = 1), now() - interval '3 days', now(),
  CASE WHEN s % 50 = 0 AND v = 1 THEN NULL ELSE 200 END, CASE WHEN s % 50 = 0 AND v = 1 THEN 'connection refused' END,
  CASE WHEN s % 50 = 0 AND v = 1 THEN 'connect' END, 40, now() + interval '60 days'
FROM generate_series(1, $sites) s, generate_series(1, $vantage) v;
ANALYZE;
SQL
  page_rows=$(psql -qAt "$url" -c "SELECT (SELECT count(*) FROM rollups_hourly) + (SELECT count(*) FROM rollups_daily)")
  local http=$((port + 4))
  # The windows are built by the consumer's folder from the rollups (once, at the first
  # alignment): measured, then the page.
  local started=$(date +%s%N)
  CK_KAFKA_SERVERS=$kafka CK_KAFKA_TOPIC=$topic CK_POSTGRESQL_URL=$url CK_LOG_LEVEL=warn \
    CK_HTTP_ADDR=127.0.0.1:$http "$bin/checksite-consumer" >/dev/null 2>&1 &
  local pid=$!
  pids+=("$pid")
  until [ "$(psql -qAt "$url" -c 'SELECT count(*) FROM series_windows_at' 2>/dev/null || echo 0)" = 1 ]; do
    kill -0 "$pid" 2>/dev/null || { echo "error: the consumer serving the page died" >&2; exit 1; }
    sleep 0.2
  done
  page_windows_s=$(awk -v ns=$(($(date +%s%N) - started)) 'BEGIN { printf "%.1f", ns / 1e9 }')
  page_first_ms=$(curl -s -o /dev/null -w '%{time_total}' "http://127.0.0.1:$http/" | awk '{ printf "%.0f", $1 * 1000 }')
  local site_path="/site?url=https%3A%2F%2Fsite-7.example%2F"
  for path in / "/?q=site-77" "$site_path" /api/status; do
    for _ in 1 2 3 4 5; do
      sleep 2.1
      curl -s -o /dev/null -w '%{time_total} %{size_download}\n' "http://127.0.0.1:$http$path"
    done | sort -n >"$work/page-$(echo "$path" | tr -c 'a-z0-9\n' _)"
  done
  med_ms() { awk '{ a[NR] = $1 * 1000 } END { printf "%.0f", a[3] }' "$work/page-$(echo "$1" | tr -c 'a-z0-9\n' _)"; }
  med_kib() { awk '{ a[NR] = $2 } END { printf "%.0f", a[3] / 1024 }' "$work/page-$(echo "$1" | tr -c 'a-z0-9\n' _)"; }
  page_html_ms=$(med_ms /) page_html_kib=$(med_kib /)
  page_q_ms=$(med_ms "/?q=site-77") page_site_ms=$(med_ms "$site_path")
  page_api_ms=$(med_ms /api/status) page_api_kib=$(med_kib /api/status)
  # 50 clients at once: the work is done once per read, not once per client.
  local ticks_before ticks_after
  for path in / /api/status; do
    sleep 2.1
    ticks_before=$(awk '{ print $14 + $15 }' "/proc/$pid/stat")
    started=$(date +%s%N)
    seq 1 50 | xargs -P 50 -I{} curl -s -o /dev/null "http://127.0.0.1:$http$path"
    local wall_ms=$((($(date +%s%N) - started) / 1000000))
    ticks_after=$(awk '{ print $14 + $15 }' "/proc/$pid/stat")
    echo "$wall_ms $(((ticks_after - ticks_before) * 1000 / $(getconf CLK_TCK)))" >"$work/page-50$(echo "$path" | tr / _)"
  done
  read -r page_50_html_ms page_50_html_cpu <"$work/page-50_"
  read -r page_50_api_ms page_50_api_cpu <"$work/page-50_api_status"
  page_rss=$(awk '/^VmHWM:/ { print $2 }' "/proc/$pid/status")
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  psql_admin -c "DROP DATABASE $db" || true
}
page_bench "$page_sites" 2 "$page_days" 1
p1=("$page_rows" "$page_first_ms" "$page_html_ms" "$page_html_kib" "$page_q_ms" "$page_site_ms" "$page_api_ms" "$page_api_kib" "$page_rss" "$page_windows_s" "$page_50_html_ms" "$page_50_html_cpu" "$page_50_api_ms" "$page_50_api_cpu")
page_bench "$page_big_sites" 3 90 2
p2=("$page_rows" "$page_first_ms" "$page_html_ms" "$page_html_kib" "$page_q_ms" "$page_site_ms" "$page_api_ms" "$page_api_kib" "$page_rss" "$page_windows_s" "$page_50_html_ms" "$page_50_html_cpu" "$page_50_api_ms" "$page_50_api_cpu")
page_rows_text() { # page_rows_text LABEL VALUES...: the table's rows for one size
  local label=$1; shift
  local rows=$1 first=$2 html=$3 html_kib=$4 q=$5 site=$6 api=$7 api_kib=$8 rss=$9 win=${10} h50=${11} h50cpu=${12} a50=${13} a50cpu=${14}
  cat <<ROWS
| status page, $label ($rows rollup rows): windows built at start / first read of \`/\` | $win s / $first ms | first read ≤ 2 s | $(verdict "$first" 2000 le) |
| status page \`/\`, same (median of 5, 2.1 s apart) | $html ms, $html_kib KiB | ≤ 100 ms | $(verdict "$html" 100 le) |
| status page \`/?q=\`, same | $q ms | ≤ 100 ms | $(verdict "$q" 100 le) |
| status page \`/site?url=\`, same | $site ms | ≤ 100 ms | $(verdict "$site" 100 le) |
| status page \`/api/status\`, same | $api ms, $api_kib KiB | ≤ 100 ms | $(verdict "$api" 100 le) |
| 50 clients at once on \`/\` / on \`/api/status\`: wall time, consumer CPU | $h50 ms, $h50cpu ms CPU / $a50 ms, $a50cpu ms CPU | one rendering per read | |
| consumer peak RSS serving the page, same | $((rss / 1024)) MiB | ≤ 250 MB | $(verdict "$rss" 244140 le) |
ROWS
}
page_table=$(page_rows_text "$page_sites sites × 2 vantage points × $page_days days" "${p1[@]}")$'\n'$(page_rows_text "$page_big_sites sites × 3 vantage points × 90 days" "${p2[@]}")

# A backlog after an outage: $publish_events buffered events, published from connecting to
# the last acknowledgement; median of 3 runs.
echo "==> publishing alone: a backlog of $publish_events events, 3 runs" >&2
: >"$work/publish-secs"
for _ in 1 2 3; do
  read -r pub_n pub_secs < <($tools publish "$kafka" "bench-publish-$stamp-$RANDOM" "$publish_events")
  [ "$pub_n" = "$publish_events" ] || { echo "error: published $pub_n of $publish_events events" >&2; exit 1; }
  echo "$pub_secs" >>"$work/publish-secs"
done
backlog_s=$(median "$work/publish-secs")
backlog_all=$(sort -n "$work/publish-secs" | paste -sd/ -)
pub_rate=$(awk -v n="$publish_events" -v t="$backlog_s" 'BEGIN { printf "%.0f", n / t }')

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
| psql's \`\\copy\` of the same rows from the client over TLS, as the consumer sends them (median of $rounds: $client_all ms); its share of the raw COPY | $client_rate rows/s, $client_of_raw % | | |
| consumer / psql \`\\copy\` (medians) | $client_ratio % | | |
| consumer with \`CK_HTTP_ADDR\` scraped every 1 s (median of $rounds) / without | $cs_rate events/s, $cs_ratio % | unchanged | |
| consumer with rollups (the default, above) / without (\`CK_ROLLUPS=off\`: $cn_rate events/s, median of $rounds) | $rollup_ratio % | ≥ 85 % | $(verdict "$rollup_ratio" 85 ge) |
| consumer CPU per event (user + sys of the process, \`--drain\` above; median of $rounds): rollups on / off | $c_us µs / $cn_us µs | ≤ 4 µs (on) | $(verdict "$c_us" 4 le) |
| consumer with alerting on (\`CK_ALERT_WEBHOOK_URL\`; median of $rounds) / without (the default, above) | $ca_rate events/s, $alert_ratio % | ≥ 80 % | $(verdict "$alert_ratio" 80 ge) |
| consumer with 100 maintenance windows in force (over 100 of the 1,000 URLs: $cm_checks checks counted as maintenance; median of $rounds) / none (the default, above) | $cm_rate events/s, $maint_ratio % | ≥ 95 % | $(verdict "$maint_ratio" 95 ge) |
| alerts, $targets targets at 1 s (one in 10 flapping): from the deciding check's \`checked_at\` to the receiver, p50 / p99 / worst of $alert_n deliveries ($alert_decided decided) | $alert_p50 ms / $alert_p99 ms / $alert_max ms | p99 ≤ 2,000 ms | $(verdict "$alert_p99" 2000 le) |
| the same with three receivers (\`CK_ALERT_RECEIVERS\`), one accepting and never answering: the two others, p50 / p99 / worst of $alert3_n deliveries ($alert3_decided decided) | $alert3_p50 ms / $alert3_p99 ms / $alert3_max ms | p99 ≤ 2,000 ms | $(verdict "$alert3_p99" 2000 le) |
| end to end, $targets targets at 1 s (producer, Kafka mutual TLS, consumer defaults): \`checked_at\` to the row's commit, p50 / p99 / worst of $e2e_n rows | $e2e_p50 ms / $e2e_p99 ms / $e2e_max ms | p99 ≤ 500 ms | $(verdict "$e2e_p99" 500 le) |
| the consumer killed (-9) and started mid-run: from the start to the first new row's commit (median of 5: $e2e_restarts ms) | $e2e_restart ms | ≤ 250 ms | $(verdict "$e2e_restart" 250 le) |
| the rollup folds in the steady state, $targets targets at 1 s (consumer defaults, ${fold_window} s after ${fold_warm} s): folds ended, their time (share of the wall time, each) / the transactions' | $folds_1k | | |
| the same, $((targets * 10)) targets at 1 s (folds spread out to a quarter of the time at most once one takes over 0.25 s) | $folds_10k | | |
| retention, $ret_rows events over 60 days, \`CK_RETENTION_DAYS=30\`: rows deleted (in 10,000-row steps), time, then VACUUM; old rows left | ${ret_deleted:-0} rows in $(awk -v ms="${ret_delete_ms:-0}" 'BEGIN { printf "%.1f", ms / 1000 }') s, VACUUM $(awk -v ms="${ret_vacuum_ms:-0}" 'BEGIN { printf "%.1f", ms / 1000 }') s; ${ret_left_old:-?} left | | |
| retention's steady state: $ret_steady_rows rows ($ret_steady_mib MiB) after the freed space was refilled: a pass by \`ts\` (the sweep, at start and daily; every pass before) / the passes in insertion order (by \`event_id\`, every 10 s) | $ret_sweep / $ret_passes | ≤ 50 ms (insertion order) | $(verdict "${ret_pass_max:-999999}" 50 le) |
| the writer (a $events-event drain into that table) during the deletion / alone | $ret_during / $ret_alone events/s = $ret_ratio % | never blocked | |
| \`events\` (table and indexes): before / at the end (old half deleted, VACUUM, 2 × $events rows written) | $ret_size_before MiB / $ret_size_after MiB (space reused, not returned) | | |
$page_table
| producer checks/s ($targets targets at 1 s, ${seconds} s; medians of $prounds runs) | $p_rate | ~$targets | |
| producer schedule lateness p50 / p99 | $p_p50 ms / $p_p99 ms | p99 ≤ 50 ms | $(verdict "$p_p99" 50 le) |
| producer CPU | $p_cpu % of one core | | |
| producer peak RSS, $targets targets (highest of $prounds) | $((p_rss / 1024)) MiB ($p_rss KiB) | ≤ 20 MB | $(verdict "$p_rss" 19531 le) |
| same, \`/metrics\` scraped every 1 s: checks/s, lateness p50 / p99, CPU | $ps_rate, $ps_p50 ms / $ps_p99 ms, $ps_cpu % | unchanged | |
| same: peak RSS | $((ps_rss / 1024)) MiB ($ps_rss KiB) | ≤ 20 MB | $(verdict "$ps_rss" 19531 le) |
| a scrape of the producer, $targets targets (median / worst of $scrapes) | $scrape_ms ms / $scrape_max_ms ms, $scrape_kib KiB | | |
| producer CPU per plain-HTTP check, $targets targets (median of $prounds) | $p_us µs (user + sys) | ≤ 150 µs | $(verdict "$p_us" 150 le) |
${scale_rows}| the knee: most targets at 1 s with p99 lateness ≤ 50 ms and ≥ 95 % of checks made | $knee | ≥ 5,000 | $(verdict "$knee" 5000 ge) |
| producer CPU per plain-HTTP check, 5,000 targets | ${s5_us:-} µs (user + sys) | ≤ 150 µs | $(verdict "${s5_us:-0}" 150 le) |
| producer peak RSS, 10,000 targets | $((${s10_rss:-0} / 1024)) MiB | ≤ 32 MB | $(verdict "${s10_rss:-0}" 31250 le) |
| producer, $spool_targets targets at 1 s, Kafka down, memory only (medians of $prounds rounds; on schedule, memory only / spooled, each round: $spool_ontimes): checks made (% of scheduled), on schedule (lateness ≤ 50 ms), lateness p99, CPU per check, peak RSS, events dropped | $sm_checks ($sm_share %), $sm_ontime %, p99 $sm_p99 ms, $sm_us µs, $((sm_rss / 1024)) MiB, $sm_dropped dropped | | |
| the same with the spool (\`CK_SPOOL_DIR\`, fsync every 1 s): checks made, on schedule, lateness p99, CPU per check (% of memory only), peak RSS, events dropped, spool size | $ss_checks ($ss_share %), $ss_ontime %, p99 $ss_p99 ms, $ss_us µs ($spool_cpu_ratio %), $((ss_rss / 1024)) MiB, $ss_dropped dropped, $ss_mib MiB | ≥ 90 % on schedule | $(verdict "$ss_ontime" 90 ge) |
| a spool of $replay_events events ($((replay_bytes / 1048576)) MiB) published when the producer starts with Kafka up: from the start to the last acknowledgement (reading the spool through included); the producer's CPU and peak RSS meanwhile | $(awk -v ms="$replay_ms" 'BEGIN { printf "%.1f", ms / 1000 }') s, $replay_rate events/s; CPU $replay_cpu s, $((replay_rss / 1024)) MiB | | |
| \`targets put\` of $list_targets targets into the targets topic: wall time (creating the topic) / from its return until a producer following the topic has checked every one | $put_s s / $all_checked_s | | |
| producer following $churn_targets targets at 1 s in the targets topic while $churn of them change every $churn_every s: checks/s, lateness p99, CPU per check, peak RSS | $churn_rate checks/s, p99 $churn_p99 ms, $churn_us µs, $((churn_rss / 1024)) MiB | p99 ≤ 50 ms, ≤ 150 µs | $(verdict "$churn_p99" 50 le) |
| producer, $https_targets HTTPS targets at 1 s (a new TLS handshake per check) | $tls_rate checks/s, p99 $tls_p99 ms, $tls_us µs CPU per check | | |
| Debian's prometheus-blackbox-exporter 0.23, /probe of the same local site ($probes probes, 8 at a time) | $bb_cpu_us CPU per probe | | |
| publish alone ($publish_events events, median of 3) | $pub_rate events/s | | |
| a backlog of $publish_events events: from connecting to the last acknowledgement (median of 3: $backlog_all s) | $backlog_s s | ≤ 1 s | $(verdict "$backlog_s" 1 le) |
| consumer peak RSS at full speed | $((c_rss / 1024)) MiB ($c_rss KiB) | ≤ 40 MB | $(verdict "$c_rss" 39062 le) |
| checksite-producer static binary | $prod_kib KiB | ≤ 5 MiB | $(verdict "$prod_kib" 5120 le) |
| checksite-consumer static binary | $cons_kib KiB | ≤ 5 MiB | $(verdict "$cons_kib" 5120 le) |
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
  echo "stored; peak RSS is the highest of the rounds. Each round runs its five drains (the defaults,"
  echo "rollups off, scraped, alerting on, maintenance windows) in an order rotated by one a round, so"
  echo "that each takes every place once in five rounds. MB = 10^6 bytes in the targets."
} >"$out"
echo "$table"
echo "written to $out" >&2
