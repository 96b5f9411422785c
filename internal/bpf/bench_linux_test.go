//go:build linux && (amd64 || arm64)

package bpf

import (
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"
)

// BenchmarkGetpeername measures one getpeername call on a socket of a cgroup
// without programs, and on host sockets of slimd's cgroup: answered from
// sk_storage (slimd's own sockets), from the port block map (accepted
// sockets), and for a socket no map knows (slimd's other sockets pay two
// lookups).
//
// Measured on 6.18 (2-vCPU VM, kvm-clock, noisy neighbours): about +150 ns
// per call over 1.3 us; with BPF_ENABLE_STATS the program itself runs
// 85 ns (sk_storage), 95 ns (port block), 135 ns (no entry) after
// subtracting the 77 ns that a trivial program shows there (the statistics'
// own clock reads). Most of the added wall time is the cgroup hook itself.
func BenchmarkGetpeername(b *testing.B) {
	env := newEnv(b)
	c := startChild(b, env.cgroup)
	plain := startChild(b, newCgroup(b))
	host := netip.MustParseAddr("127.0.0.1")
	ln := c.fd(b, "listen %s", netip.AddrPortFrom(host, hostPort))
	cl := c.fd(b, "connect %s %s", netip.AddrPortFrom(host, blockStart+1), netip.AddrPortFrom(host, hostPort))
	acc, _ := accept4(b, ln)
	other := c.fd(b, "connect - %s", netip.AddrPortFrom(host, hostPort))
	plain.fd(b, "listen %s", netip.AddrPortFrom(host, hostPort))
	baseline := plain.fd(b, "connect - %s", netip.AddrPortFrom(host, hostPort))

	run := func(name string, fd int) {
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				if _, err := unix.Getpeername(fd); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	p := env.load(b)
	check(b, p.SetSocket(cl, netip.MustParseAddrPort("10.200.0.2:20481"), netip.MustParseAddrPort("10.200.0.3:80")))
	check(b, p.PutPortBlock(host, blockStart, netip.MustParseAddr("10.200.0.2")))
	check(b, p.PutListener(host, hostPort, netip.MustParseAddrPort("10.200.0.3:80")))
	run("no-programs", baseline)
	run("sk_storage", cl)
	run("port-block", acc)
	run("no-entry", other)
}

// BenchmarkPortBlocksAt200k reads back a port block map at cluster size
// (2,000 hosts of 100 containers), as slimd's reconcile pass does every
// resync interval (docs/scale.md): 1.17 s entry by entry, 0.12 s in
// batches into a presized slice on the 2-vCPU test machine.
func BenchmarkPortBlocksAt200k(b *testing.B) {
	env := newEnv(b)
	p := env.load(b)
	const n = 200_000
	for i := range n {
		host := netip.AddrFrom4([4]byte{100, 64, byte(i / 100 >> 8), byte(i / 100)})
		vip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		if err := p.PutPortBlock(host, uint16(20480+(i%100)*256), vip); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for b.Loop() {
		bs, err := p.PortBlocks()
		if err != nil || len(bs) != n {
			b.Fatalf("%d blocks, %v", len(bs), err)
		}
	}
}
