#!/usr/bin/env bash
# Runs every check and test: formatting, vet, staticcheck, unit tests, and
# the kernel and multi-host lab tests (root, real namespaces). This is what
# CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:$PATH
# Kernel and lab tests skip without root elsewhere; here they must run (and
# fail if they cannot), as in CI.
export CI=true
./scripts/deps.sh

echo "== gofmt" >&2
bad=$(gofmt -l $(git ls-files '*.go') 2>/dev/null || true)
if [ -n "$bad" ]; then
	echo "gofmt would change:" >&2
	echo "$bad" >&2
	exit 1
fi
echo "== go vet" >&2
go vet ./...
echo "== staticcheck" >&2
go tool staticcheck ./...
echo "== go build" >&2
go build ./...
echo "== go generate (committed BPF objects must match their source)" >&2
go generate ./internal/bpf/
if ! git diff --quiet -- internal/bpf; then
	echo "internal/bpf: generated files differ from the committed ones; run go generate ./internal/bpf/ and commit" >&2
	git diff --stat -- internal/bpf >&2
	exit 1
fi

# Lab tests use fixed namespace names (slimlab-*), so packages run one at a
# time (-p 1); within a package tests run in order. testsummary prints what
# go test would and fails the run if any test failed or was skipped: with
# everything installed and root, a skipped test is one that did not run.
echo "== go test" >&2
go build -o /tmp/slim-testsummary ./scripts/testsummary
go test -json -race -p 1 -count=1 -timeout 40m ./... 2>&1 | /tmp/slim-testsummary | tee /tmp/slim-test.log
