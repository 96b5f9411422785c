package bpf

// The BPF object is committed (slim_bpfel.go, slim_bpfel.o) so that a plain
// go build needs no clang; go generate ./internal/bpf/ rebuilds it with the
// bpf2go pinned in go.mod (clang and libbpf-dev's bpf/bpf_helpers.h needed).
// bpfel is the object for little-endian targets: amd64 and arm64.

// guard.h first: slim.c includes it.
//go:generate go run guardgen.go

// -mcpu=v3: the connect programs use atomic fetch-and-add (Linux 5.12).
//go:generate go tool bpf2go -tags linux -target bpfel -cflags "-O2 -mcpu=v3 -g -Wall -Werror" slim slim.c
