// Package lab builds Slim's multi-host lab on one machine: network
// namespaces are hosts, a bridge in its own namespace is the wire between
// them, every host runs its own slimd, and containers are namespaces plus a
// cgroup attached to their host through the slim-cni plugin, as a container
// runtime would attach them. The demo, the tests and the benchmarks all use
// it; slimctl's `lab` commands are thin wrappers of this package.
//
// What the lab makes, all named so that Down finds it again without state
// files (every name starts with "slimlab"):
//
//	/run/netns/slimlab-wire      bridge "wire", one veth "h<i>" per host
//	/run/netns/slimlab-h<i>      host i: eth0 = <underlay>.<i>, lo, slimd
//	/run/netns/slimlab-c-<name>  container <name>: eth0 made by slim-cni
//	<cgroup2>/slimlab/h<i>/slimd     slimd of host i
//	<cgroup2>/slimlab/h<i>/c-<name>  processes of container <name>
//	<cgroup2>/slimlab/h<i>/host      processes exec'd in host i (lab exec h<i>)
//	<state dir>                  lab.json, h<i>/{data,slimd.sock,slimd.log,slimd.pid},
//	                             containers/<name>.{json,log}, cni/ (libcni cache)
//
// The machine's root network namespace is not touched: the wire bridge lives
// in slimlab-wire, and traffic stays inside namespaces the lab created.
//
// Processes are started through a launcher (`slimctl lab nsexec`, see
// Launch) rather than `ip netns exec`: ip netns exec enters a new mount
// namespace and remounts /sys, and slimd needs the real /sys/fs/cgroup for
// its BPF programs. The launcher enters the network namespace on one locked
// OS thread, joins the cgroup and execs the command on that thread; that is
// also where a seccomp filter can be installed before exec.
//
// The namespace names are fixed, so only one lab can exist on a machine at a
// time: lab tests must not run in parallel with each other, not even from
// different packages. labtest serializes them with a machine-wide lock.
//
// What the package leaves to others: the overlay, addressing and everything
// on a host is slimd's; the container's interface is slim-cni's. The lab only
// builds the machines and the cables, starts the processes and cleans up.
package lab
