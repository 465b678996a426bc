#!/usr/bin/env bash
# The main job with no cloud account: local Kafka (mutual TLS, as Aiven) and PostgreSQL
# (TLS), a small local web site, the producer and the consumer running for a while, then
# what reached PostgreSQL, per site. Run through `just demo`, which builds the binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${CHECKSITE_DEMO_SECONDS:-20}
port=${CHECKSITE_DEMO_PORT:-18631}
database=${CHECKSITE_DEMO_DB:-checksite_demo}
bin=target/x86_64-unknown-linux-musl/release

scripts/testbed/testbed.sh start
# The status page an earlier demo left running on the port this one uses (demo-page.pid: one
# left by a demo of an earlier version, on the default port).
for old_page in "${CHECKSITE_TESTBED_DIR:-/tmp/checksite-testbed}"/demo-page{-$port,}.pid; do
  if [ -f "$old_page" ]; then kill "$(cat "$old_page")" 2>/dev/null || true; rm -f "$old_page"; sleep 0.5; fi
done
# shellcheck disable=SC1091
source "${CHECKSITE_TESTBED_DIR:-/tmp/checksite-testbed}/env"

work=$(mktemp -d /tmp/checksite-demo.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

echo "==> a small web site on http://127.0.0.1:$port/ (its /regional page fails for us-east only)"
mkdir -p "$work/site"
cat >"$work/site.py" <<'PY'
import http.server, sys
PAGE = b"<html><body><h1>Welcome to the demo shop</h1><p>Everything is fine.</p></body></html>"
class Site(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        where = self.headers.get("X-Vantage", "")
        if self.path == "/":
            self.answer(200, PAGE)
        elif self.path == "/regional":
            # A CDN edge that is down in one region only: what one vantage point cannot tell.
            self.answer(503 if where == "us-east" else 200, b"regional edge")
        else:
            self.answer(404, b"not here")
    def answer(self, status, body):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Site).serve_forever()
PY
python3 "$work/site.py" "$port" >"$work/site.log" 2>&1 &
pids+=($!)

# The same list from two vantage points (each says who it is to the site). Names and groups
# are what the status page shows; the admin console is checked, stored and alerted like the
# others, and never shown ("public": false).
for vantage in eu-west us-east; do
  cat >"$work/targets-$vantage.json" <<JSON
[
  {"url": "http://127.0.0.1:$port/", "interval_s": 1, "regex": "Welcome to the (\\\\w+ \\\\w+)",
   "name": "Shop", "group": "Demo shop"},
  {"url": "http://127.0.0.1:$port/regional", "interval_s": 1, "headers": {"X-Vantage": "$vantage"},
   "name": "Regional edge", "group": "Demo shop"},
  {"url": "http://127.0.0.1:$port/no-such-page", "interval_s": 1, "name": "Old promotion", "group": "Demo shop"},
  {"url": "http://127.0.0.1:1/", "interval_s": 2, "name": "Admin console", "public": false},
  {"url": "http://demo-shop.invalid/", "interval_s": 2}
]
JSON
done

echo "==> a fresh database $database"
PGOPTIONS="-c client_min_messages=warning" psql -q "$CK_TEST_POSTGRES_URL" \
  -c "DROP DATABASE IF EXISTS $database" -c "CREATE DATABASE $database"
db_url=${CK_TEST_POSTGRES_URL/\/postgres\?//$database?}

topic="checksite-demo-$(date +%s)"
export CK_KAFKA_SERVERS=$CK_TEST_KAFKA_SSL
export CK_KAFKA_SSL="$CK_TEST_CERTS/ca.pem $CK_TEST_CERTS/service.cert $CK_TEST_CERTS/service.key"
export CK_KAFKA_TOPIC=$topic

echo "==> two checksite-producers, vantage points eu-west and us-east: 5 sites each -> Kafka topic $topic (mutual TLS)"
CK_TARGETS="$work/targets-eu-west.json" CK_PRODUCER_ID=eu-west CK_HTTP_ADDR=127.0.0.1:$((port + 1)) \
  "$bin/checksite-producer" 2>"$work/producer-eu-west.log" &
pids+=($!)
CK_TARGETS="$work/targets-us-east.json" CK_PRODUCER_ID=us-east \
  "$bin/checksite-producer" 2>"$work/producer-us-east.log" &
pids+=($!)
echo "==> checksite-consumer: Kafka -> PostgreSQL (TLS, verified)"
CK_POSTGRESQL_URL=$db_url CK_HTTP_ADDR=127.0.0.1:$((port + 2)) \
  "$bin/checksite-consumer" 2>"$work/consumer.log" &
pids+=($!)

echo "==> running for $seconds s (logs: $work/producer-*.log, $work/consumer.log)"
sleep "$seconds"
echo
echo "==> what Prometheus would scrape (CK_HTTP_ADDR): the producer, http://127.0.0.1:$((port + 1))/metrics"
curl -s "http://127.0.0.1:$((port + 1))/metrics" | grep -E '^(probe_success|checksite_producer_events_published_total)' || true
echo "==> the consumer, http://127.0.0.1:$((port + 2))/metrics; /readyz says: $(curl -s "http://127.0.0.1:$((port + 2))/readyz")"
curl -s "http://127.0.0.1:$((port + 2))/metrics" | grep -E '^checksite_consumer_(lag|events_written_total)' || true
kill -TERM "${pids[1]}" "${pids[2]}" && wait "${pids[1]}" "${pids[2]}" || true
sleep 2
kill -TERM "${pids[3]}" && wait "${pids[3]}" || true

echo
echo "==> what reached PostgreSQL"
psql -q "$db_url" -P footer=off <<'SQL'
SELECT url, producer AS "vantage point",
       count(*) AS checks,
       round(100.0 * avg(up::int), 1) AS "up %",
       round(percentile_cont(0.5) WITHIN GROUP (ORDER BY elapsed)::numeric, 1) AS "median ms",
       (array_agg(coalesce(status::text, error_kind) ORDER BY ts DESC))[1] AS "last status",
       (array_agg(content_match ORDER BY ts DESC))[1] AS "last match"
  FROM events GROUP BY url, producer ORDER BY url, producer;
SQL

# The status page stays up with the services: a consumer of the demo's topic (nothing left
# to write) serving it, detached from this script; `just services stop` stops it too.
state=${CHECKSITE_TESTBED_DIR:-/tmp/checksite-testbed}
page=127.0.0.1:$((port + 2))
CK_POSTGRESQL_URL=$db_url CK_HTTP_ADDR=$page setsid nohup "$bin/checksite-consumer" \
  >"$work/page.log" 2>&1 </dev/null &
echo $! >"$state/demo-page-$port.pid"
disown  # not waited for when this script ends
for _ in $(seq 1 50); do curl -sf -o /dev/null "http://$page/healthz" && break; sleep 0.1; done
echo
echo "==> the status page: http://$page/ (JSON: http://$page/api/status): one row per target, its"
echo "    vantage points judged as one; named targets by name only (their URLs are not published)"
curl -s "http://$page/api/status" | python3 -c '
import json, sys
status = json.load(sys.stdin)
for t in status["targets"]:
    shown = " / ".join(x for x in (t["group"], t["name"] or t["url"]) if x)
    seen = ", ".join(v["producer"] + (" up" if v["up"] else " down") for v in t["vantage"])
    print("    %-34s %-9s %s" % (shown, t["state"].upper(), seen))
hidden = [w for w in ("127.0.0.1:1/", "Admin console") if w in json.dumps(status)]
print("    the admin console (\"public\": false): stored above, on the page: %s" % ("YES" if hidden else "no"))
'
echo "The page stays up. The services keep running for you to explore: source $state/env,"
echo "then psql \"\${CK_TEST_POSTGRES_URL/\/postgres?/\/$database?}\". 'just services stop' stops them and the page."
