#!/usr/bin/env bash
# The full benchmark, host vs overlay vs slim side by side, in one command
# on a fresh Debian machine (as root): installs what it needs, builds the
# binaries into one directory (slimctl bench finds slimd, slim-cni and
# slimprobe beside itself), runs `slimctl bench` and writes the report and
# charts. Arguments go to slimctl bench (e.g. --quick, --tests crr1,crr).
#
#   ./scripts/bench.sh                 # report in bench-out/
#   OUT=/tmp/b ./scripts/bench.sh --quick
#
# Everything runs inside network namespaces the lab creates and removes.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:$PATH
./scripts/deps.sh

out=${OUT:-bench-out}
mkdir -p bin "$out/charts"
go build -o bin/ ./cmd/slimd ./cmd/slimctl ./cmd/slim-cni
# Static, so that it runs in any lab container.
CGO_ENABLED=0 go build -o bin/ ./cmd/slimprobe

bin/slimctl bench --charts "$out/charts" -o json "$@" >"$out/report.json"
bin/slimctl bench --from "$out/report.json" | tee "$out/report.md"
echo "bench: report $out/report.json, table $out/report.md, charts $out/charts/" >&2
