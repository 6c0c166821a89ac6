#!/usr/bin/env bash
# Runs the app's main job locally with no Azure account: Azurite on its default ports (a fresh
# store in .azurite/storage each run), the Graph simulator (`graph-sim`) standing in for a Teams tenant, and the handler in
# standalone mode on http://localhost:7071, consuming its own queue.
#
# The handler subscribes itself to the simulator's call records (MaintainSubscription runs at
# start-up; the simulator validates both webhook URLs first, as Graph does), after which the
# simulator posts a change notification for every call record that becomes available; the handler
# enqueues it, fetches the complete record (every session and participant page, a meeting of 2,000
# sessions among them) through the simulator's managed-identity endpoint, and stores it in the
# CallRecords, CallRecordSessions and CallRecordBodies tables. Meanwhile its timer pulls the tenant's
# PSTN and Direct Routing reports into PstnCalls and DirectRoutingCalls (every 30 s here, every
# 15 minutes by default; rows appear in the simulated reports 30 simulated minutes after their call).
# Every 10 s it prints, per source, what the tenant has made against what is stored, and the
# health verdict.
# Simulated time runs 60x faster, so two hours of calls arrive in about two minutes. Ctrl-C stops.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/ensure-node-deps.sh
cargo build --locked --release --workspace --bins

export PORT="${PORT:-7071}"
SIM_PORT="${SIM_PORT:-7072}"
mkdir -p .azurite
# Every run is a new simulated tenant: its storage starts empty, so that "made" and "stored" below
# compare the same tenant (the handler log and the simulator's output stay in .azurite/).
rm -rf .azurite/storage
mkdir -p .azurite/storage
# Azurite and the simulator run in their own sessions: Ctrl-C reaches the handler (which stops
# first, see cleanup) and not the services it is still using.
setsid node_modules/.bin/azurite --silent --skipApiVersionCheck --disableTelemetry --location .azurite/storage \
  --debug .azurite/debug.log >/dev/null &
azurite_pid=$!
sim_pid=
handler_pid=
# The handler stops first, while the storage and the simulator it uses are still there: it takes no
# new work and gives what is in flight 10 s (what it leaves comes back from the queue next time).
stop() { # pid, seconds
  [ -n "$1" ] || return 0
  kill "$1" 2>/dev/null || return 0
  for _ in $(seq 1 $(($2 * 10))); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$1" 2>/dev/null || true
}
cleanup() {
  trap - EXIT INT TERM
  echo "--- Stopping (the handler first, then the simulator and Azurite)"
  stop "$handler_pid" 15
  stop "$sim_pid" 5
  stop "$azurite_pid" 5
}
trap cleanup EXIT INT TERM

# Calls of the last two hours, each available 120 simulated minutes after it ended: with the clock
# at 60x they become available over the next two real minutes, one notification each.
sim_out=.azurite/graph-sim.out
setsid target/release/graph-sim --port "$SIM_PORT" --calls 40 --big-meetings 1 --pstn 500 --direct-routing 300 \
  --available-after-minutes 120 --clock-factor 60 >"$sim_out" &
sim_pid=$!
for _ in $(seq 1 100); do grep -q '^call records:' "$sim_out" 2>/dev/null && break; sleep 0.1; done
setting() { sed -n "s/^$1=//p" "$sim_out"; }

export AzureWebJobsStorage="UseDevelopmentStorage=true"
export GRAPH_TENANT_ID="$(setting GRAPH_TENANT_ID)"
export GRAPH_BASE_URL="$(setting GRAPH_BASE_URL)"
export GRAPH_AUTH=managed-identity
export AZURE_CLIENT_ID="$(setting AZURE_CLIENT_ID)"
export IDENTITY_ENDPOINT="$(setting IDENTITY_ENDPOINT)"
export IDENTITY_HEADER="$(setting IDENTITY_HEADER)"
export NOTIFICATION_CLIENT_STATE="${NOTIFICATION_CLIENT_STATE:-local-client-state}"
export RUST_LOG="${RUST_LOG:-info}"
export REPORTS_SCHEDULE="${REPORTS_SCHEDULE:-*/30 * * * * *}"
export READ_API_KEYS="${READ_API_KEYS:-local-key}"
# One instance, one clock: the feeds may show rows 30 s after they are stored instead of 5 minutes.
export FEED_SETTLE_SECONDS="${FEED_SETTLE_SECONDS:-30}"
export NOTIFICATION_URL="http://127.0.0.1:$PORT/api/notifications"
export LIFECYCLE_NOTIFICATION_URL="http://127.0.0.1:$PORT/api/lifecycle"

for _ in $(seq 1 100); do
  (exec 3<>/dev/tcp/127.0.0.1/10002) 2>/dev/null && break
  sleep 0.1
done
handler_log=.azurite/handler.log
target/release/teams-cdr-functions standalone >"$handler_log" 2>&1 &
handler_pid=$!
echo "--- The handler log (JSON lines): $handler_log"
base="http://127.0.0.1:$PORT"
for _ in $(seq 1 100); do
  curl -fs "$base/" >/dev/null 2>&1 && break
  sleep 0.1
done

echo "--- Graph validation handshake, answered by the webhook:"
curl -s -X POST "$base/api/notifications?validationToken=Validation%3A+hello+from+Graph"; echo

echo "--- Subscribing: MaintainSubscription runs at start-up (Graph validates both webhook URLs):"
subscription() {
  node - <<'JS'
// Reads the AppState row of the subscription with an account SAS signed from Azurite's well-known
// development key.
const crypto = require("crypto"), http = require("http");
const account = "devstoreaccount1";
const key = Buffer.from("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==", "base64");
const se = new Date(Date.now() + 600000).toISOString().replace(/\.\d+Z$/, "Z");
const toSign = [account, "r", "t", "o", "", se, "", "http", "2021-08-06", "", ""].join("\n");
const sig = crypto.createHmac("sha256", key).update(toSign).digest("base64");
const sas = new URLSearchParams({sv: "2021-08-06", ss: "t", srt: "o", sp: "r", se, spr: "http", sig}).toString();
http.get(`http://127.0.0.1:10002/${account}/AppState(PartitionKey='Subscription',RowKey='callRecords')?${sas}`,
  {headers: {Accept: "application/json;odata=nometadata"}}, (res) => {
  let body = "";
  res.on("data", (c) => body += c);
  res.on("end", () => {
    const row = res.statusCode === 200 ? JSON.parse(body) : {};
    if (row.SubscriptionId) console.log(`subscription ${row.SubscriptionId}, expires ${row.ExpirationDateTime}`);
    else if (row.LastError) console.log(`not subscribed: ${row.LastError}`);
  });
});
JS
}
for _ in $(seq 1 100); do
  line=$(subscription || true)
  [ -n "$line" ] && break
  sleep 0.2
done
echo "${line:-not subscribed yet: see the handler log}"

echo "--- Read the data through the read API (rows appear $FEED_SETTLE_SECONDS s after they are stored):"
echo "  curl -s -H 'x-functions-key: $READ_API_KEYS' '$base/api/v1/callrecords?limit=5'"
echo "  curl -s -H 'x-functions-key: $READ_API_KEYS' '$base/api/v1/pstncalls?format=csv'"
echo "  curl -s -H 'x-functions-key: $READ_API_KEYS' '$base/api/v1/directroutingcalls?format=ndjson'"
echo "  curl -s -H 'x-functions-key: $READ_API_KEYS' '$base/api/v1/openapi.json'"
echo "--- Progress every 10 s: what the tenant has made so far / what the app has stored (Ctrl-C stops)"
while kill -0 "$handler_pid" 2>/dev/null; do
  GRAPH_BASE_URL="$GRAPH_BASE_URL" APP_BASE="$base" node - <<'JS' || true
// One line: per source, what the simulated tenant has made (the simulator's /sim/status) and what
// the app has stored (the tables, read with an account SAS signed from Azurite's well-known
// development key), then the app's health verdict.
const crypto = require("crypto"), http = require("http");
const account = "devstoreaccount1";
const key = Buffer.from("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==", "base64");
const se = new Date(Date.now() + 600000).toISOString().replace(/\.\d+Z$/, "Z");
const toSign = [account, "rl", "t", "sco", "", se, "", "http", "2021-08-06", "", ""].join("\n");
const sig = crypto.createHmac("sha256", key).update(toSign).digest("base64");
const sas = new URLSearchParams({sv: "2021-08-06", ss: "t", srt: "sco", sp: "rl", se, spr: "http", sig}).toString();
const getJson = (url, headers = {}) => new Promise((resolve) => {
  http.get(url, {headers: {Accept: "application/json;odata=nometadata", ...headers}}, (res) => {
    let body = "";
    res.on("data", (c) => body += c);
    res.on("end", () => { try { resolve({status: res.statusCode, json: JSON.parse(body)}); } catch { resolve({status: res.statusCode, json: null}); } });
  }).on("error", () => resolve({status: 0, json: null}));
});
// Rows of a table (keys only), following continuations.
const count = async (table) => {
  let n = 0, next = "";
  for (;;) {
    const res = await new Promise((resolve) => http.get(`http://127.0.0.1:10002/${account}/${table}()?$select=RowKey&${sas}${next}`,
      {headers: {Accept: "application/json;odata=nometadata"}}, (r) => {
        let body = ""; r.on("data", (c) => body += c);
        r.on("end", () => resolve({status: r.statusCode, headers: r.headers, body}));
      }).on("error", () => resolve({status: 0})));
    if (res.status !== 200) return n;
    n += JSON.parse(res.body).value.length;
    const pk = res.headers["x-ms-continuation-nextpartitionkey"], rk = res.headers["x-ms-continuation-nextrowkey"];
    if (!pk) return n;
    next = `&NextPartitionKey=${encodeURIComponent(pk)}` + (rk ? `&NextRowKey=${encodeURIComponent(rk)}` : "");
  }
};
(async () => {
  const made = (await getJson(`${process.env.GRAPH_BASE_URL}/sim/status`)).json ?? {};
  const [records, pstn, dr] = await Promise.all(["CallRecords", "PstnCalls", "DirectRoutingCalls"].map(count));
  const health = (await getJson(`${process.env.APP_BASE}/api/health`)).json?.status ?? "no answer";
  const part = (name, m, stored, field) => `${name} ${m ? m[field] : "?"}/${m ? m.total : "?"} made, ${stored} stored`;
  console.log(`${new Date().toISOString().slice(11, 19)}  ` +
    [part("call records", made.callRecords, records, "available"),
     part("PSTN", made.pstnCalls, pstn, "published"),
     part("Direct Routing", made.directRoutingCalls, dr, "published"),
     `health ${health}`].join(" · "));
})();
JS
  sleep 10
done
