#!/usr/bin/env bash
# The lab demo: builds Slim, starts a 2-host lab with containers, shows
# cross-host connectivity, the fast path at work, and compares iperf3
# throughput host vs overlay vs slim.
# Everything runs inside network namespaces the lab creates; `slimctl lab
# down` (run at the end) removes them.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:$PATH
./scripts/deps.sh

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "build"
mkdir -p bin
go build -o bin/ ./cmd/slimd ./cmd/slimctl ./cmd/slim-cni
ctl=bin/slimctl

"$ctl" lab down -q || true
trap '"$ctl" lab down -q || true' EXIT

step "lab up: 2 hosts (network namespaces), one slimd each, etcd embedded in h1"
"$ctl" lab up --hosts 2

step "containers: web on h1, client on h2, peer on h1 (fast path); webplain on h1 and plain on h2 (--no-slim: overlay only)"
web=$("$ctl" lab run h1 web --label app=web -- iperf3 -s)
"$ctl" lab run h2 client --label app=client -- sleep infinity >/dev/null
"$ctl" lab run h1 peer -- sleep infinity >/dev/null
webplain=$("$ctl" lab run h1 webplain --no-slim -- iperf3 -s)
"$ctl" lab run h2 plain --no-slim -- sleep infinity >/dev/null
"$ctl" lab ls
"$ctl" --socket /run/slimlab/h1/slimd.sock endpoints

step "cross-host ping client(h2) -> web(h1) $web, and same-host peer(h1) -> web"
"$ctl" lab exec client -- ping -c 3 -i 0.2 "$web"
"$ctl" lab exec peer -- ping -c 2 -i 0.2 "$web"

bps() { sed -n 's/.*"bits_per_second":[[:space:]]*\([0-9.e+]*\).*/\1/p' | tail -1; }
step "iperf3, 5 s each: host networking (h2 -> h1 underlay) vs overlay (plain -> webplain over VXLAN) vs slim (client -> web)"
"$ctl" lab exec h1 -- iperf3 -s -D -1 -p 5301 >/dev/null
sleep 0.5
host=$("$ctl" lab exec h2 -- iperf3 -c 192.168.77.1 -p 5301 -t 5 -J | bps)
overlay=$("$ctl" lab exec plain -- iperf3 -c "$webplain" -t 5 -J | bps)
# While slim's run goes on, show its connections: host to host on the
# wire, virtual addresses for the applications.
( sleep 2; echo "h2's fast-path connections during the slim run:" >&2
  "$ctl" --socket /run/slimlab/h2/slimd.sock connections >&2 ) &
slim=$("$ctl" lab exec client -- iperf3 -c "$web" -t 5 -J | bps)
wait
awk -v h="$host" -v o="$overlay" -v s="$slim" 'BEGIN {
	printf "%-10s %12s %8s\n", "mode", "Gbit/s", "vs host"
	printf "%-10s %12.2f %8.2f\n", "host", h/1e9, 1
	printf "%-10s %12.2f %8.2f\n", "overlay", o/1e9, o/h
	printf "%-10s %12.2f %8.2f\n", "slim", s/1e9, s/h
}'

step "lab down"
