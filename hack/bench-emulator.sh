#!/usr/bin/env bash
# Measures the emulator's throughput under a wrk load on loopback (release build). Bounded: 2 threads,
# 32 connections, 10 s per endpoint. Prints requests/s and latency; fails on any non-2xx answer or socket error.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
cargo build --release --locked --quiet --bin databricks-emulator
account=0d3c8a0e-6f1b-4c2a-9a57-3f2b1e4d5c6a
out=$(mktemp)
target/release/databricks-emulator --account-id "$account" --admin-client-id bench-admin \
  --admin-client-secret bench-secret --workspace 1001 >"$out" &
pid=$!
trap 'kill $pid 2>/dev/null; rm -f "$out"' EXIT
for _ in $(seq 50); do grep -q listening "$out" && break; sleep 0.1; done
url=$(sed -n 's/^listening on //p' "$out")
token=$(curl -s -u bench-admin:bench-secret -d grant_type=client_credentials -d scope=all-apis \
  "$url/oidc/accounts/$account/v1/token" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
auth="Authorization: Bearer $token"
for i in $(seq 50); do
  curl -s -o /dev/null -H "$auth" -H 'Content-Type: application/json' -d "{\"displayName\":\"bench-$i\"}" \
    "$url/api/2.0/accounts/$account/scim/v2/ServicePrincipals"
done
status=0
for path in "scim/v2/ServicePrincipals?startIndex=1&count=100" "oauth2/custom-app-integrations" \
            "workspaces/1001/permissionassignments"; do
  echo "== GET /api/2.0/accounts/{id}/$path"
  result=$(wrk -t2 -c32 -d10s --latency -H "$auth" "$url/api/2.0/accounts/$account/$path")
  echo "$result" | grep -E "Requests/sec|Latency |50%|99%|Non-2xx|Socket errors" || true
  grep -E "Non-2xx|Socket errors" <<<"$result" >/dev/null && status=1
done
echo "== token endpoint (client credentials)"
lua=$(mktemp --suffix .lua)
cat >"$lua" <<'LUA'
wrk.method = "POST"
wrk.body = "grant_type=client_credentials&scope=all-apis"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "Basic YmVuY2gtYWRtaW46YmVuY2gtc2VjcmV0"
LUA
result=$(wrk -t2 -c32 -d10s --latency -s "$lua" "$url/oidc/accounts/$account/v1/token")
rm -f "$lua"
echo "$result" | grep -E "Requests/sec|Latency |50%|99%|Non-2xx|Socket errors" || true
grep -E "Non-2xx|Socket errors" <<<"$result" >/dev/null && status=1
curl -s "$url/_emulator/stats" | python3 -c 'import json,sys; s=json.load(sys.stdin); print("emulator counted", s["requests"], "requests,", s["throttled"], "throttled")'
exit $status
