#!/usr/bin/env bash
# Installs what building, testing and the demo need on a fresh Debian
# machine: Debian packages and the Go modules. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

need_root() {
	if [ "$(id -u)" -ne 0 ]; then
		echo "deps: run as root (network namespaces, vxlan and cgroups need it)" >&2
		exit 1
	fi
}
need_root

# gcc and libc6-dev: slimctl bench compiles its crr1 client (C, static).
# curl, wget, python3 and nodejs: clients and servers of the compatibility
# test (internal/broker TestCompat; postgresql brings psql).
# containernetworking-plugins and iptables: the reference portmap plugin
# (it writes iptables rules) that slim-cni is chained with (internal/lab
# TestCNIChained), and the loopback plugin containerd's CRI runs.
# containerd and busybox-static: the Kubernetes node path end to end
# (internal/broker TestCRI drives containerd's CRI; busybox fills the
# images it builds).
pkgs=(iproute2 iperf3 nftables ethtool iputils-ping socat kmod ca-certificates util-linux runc crun clang llvm libbpf-dev
	memcached nginx-light wrk postgresql redis-server redis-tools gcc libc6-dev curl wget python3 nodejs
	containernetworking-plugins iptables containerd busybox-static)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
	echo "deps: installing ${missing[*]}" >&2
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v go >/dev/null 2>&1; then
	if [ -x /usr/local/go/bin/go ]; then
		export PATH=/usr/local/go/bin:$PATH
	else
		echo "deps: Go toolchain not found (expected go on PATH or /usr/local/go)" >&2
		exit 1
	fi
fi
go mod download
