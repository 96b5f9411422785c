//go:build linux && (amd64 || arm64)

package bpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// sock_diag constants x/sys/unix does not have (linux/inet_diag.h).
const (
	inetDiagReqSkBPFStorages = 2  // INET_DIAG_REQ_SK_BPF_STORAGES
	inetDiagSkBPFStorages    = 20 // INET_DIAG_SK_BPF_STORAGES
	sizeofInetDiagReqV2      = 56
	sizeofInetDiagMsg        = 72
)

// ConnKey is a host socket's 4-tuple on the wire, addresses unmapped.
type ConnKey struct{ Local, Remote netip.AddrPort }

// ConnRecord is what a client host socket's permit record says: when it
// connected (zero if it has not) and the peer its application named (the
// virtual address getpeername shows: a service's, through one).
type ConnRecord struct {
	Since time.Time
	Peer  netip.AddrPort
}

// Conns returns the permit record of each client host socket that has
// one, by its 4-tuple: one sock_diag dump per family that asks the kernel
// for the sockets' slim_conns entries.
func (p *Programs) Conns() (map[ConnKey]ConnRecord, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, fmt.Errorf("sock_diag socket: %w", err)
	}
	defer unix.Close(fd)
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return nil, err
	}
	now, boot := time.Now(), ts.Nano()
	out := map[ConnKey]ConnRecord{}
	for seq, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		if err := p.diagDump(fd, uint32(seq+1), family, func(k ConnKey, v []byte) {
			// struct conn: since (8 bytes), local and peer (struct vaddr,
			// 20 bytes each: the address's 16 bytes, port, flags).
			if len(v) < 48 {
				return
			}
			var r ConnRecord
			if since := int64(binary.NativeEndian.Uint64(v)); since > 0 && since <= boot {
				r.Since = now.Add(-time.Duration(boot - since))
			}
			if binary.NativeEndian.Uint16(v[46:])&vaddrSet != 0 {
				r.Peer = netip.AddrPortFrom(netip.AddrFrom16([16]byte(v[28:44])).Unmap(), binary.NativeEndian.Uint16(v[44:]))
			}
			out[k] = r
		}); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// diagDump dumps the TCP sockets of one family and calls fn with the
// slim_conns value of each socket that has one.
func (p *Programs) diagDump(fd int, seq uint32, family uint8, fn func(ConnKey, []byte)) error {
	const attrLen = unix.SizeofRtAttr
	req := make([]byte, unix.NLMSG_HDRLEN+sizeofInetDiagReqV2+2*attrLen+4)
	hdr := (*unix.NlMsghdr)(unsafe.Pointer(&req[0]))
	*hdr = unix.NlMsghdr{Len: uint32(len(req)), Type: unix.SOCK_DIAG_BY_FAMILY, Flags: unix.NLM_F_REQUEST | unix.NLM_F_DUMP, Seq: seq}
	body := req[unix.NLMSG_HDRLEN:]
	body[0], body[1] = family, unix.IPPROTO_TCP
	binary.NativeEndian.PutUint32(body[4:], ^uint32(0)) // every state
	a := body[sizeofInetDiagReqV2:]
	binary.NativeEndian.PutUint16(a[0:], uint16(2*attrLen+4))
	binary.NativeEndian.PutUint16(a[2:], inetDiagReqSkBPFStorages|unix.NLA_F_NESTED)
	binary.NativeEndian.PutUint16(a[4:], uint16(attrLen+4))
	binary.NativeEndian.PutUint16(a[6:], unix.SK_DIAG_BPF_STORAGE_REQ_MAP_FD)
	binary.NativeEndian.PutUint32(a[8:], uint32(p.objs.SlimConns.FD()))
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("sock_diag request: %w", err)
	}
	buf := make([]byte, 1<<16)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("sock_diag: %w", err)
		}
		for b := buf[:n]; len(b) >= unix.NLMSG_HDRLEN; {
			h := (*unix.NlMsghdr)(unsafe.Pointer(&b[0]))
			l := int(h.Len)
			if l < unix.NLMSG_HDRLEN || l > len(b) {
				return errors.New("sock_diag: truncated message")
			}
			data := b[unix.NLMSG_HDRLEN:l]
			b = b[min(len(b), (l+unix.NLMSG_ALIGNTO-1)&^(unix.NLMSG_ALIGNTO-1)):]
			switch h.Type {
			case unix.NLMSG_DONE:
				return nil
			case unix.NLMSG_ERROR:
				if len(data) >= 4 {
					if e := -int32(binary.NativeEndian.Uint32(data)); e != 0 {
						return fmt.Errorf("sock_diag: %w", unix.Errno(e))
					}
				}
				return nil
			}
			if len(data) < sizeofInetDiagMsg {
				continue
			}
			if v := storageValue(data[sizeofInetDiagMsg:]); v != nil {
				fn(diagKey(data), v)
			}
		}
	}
}

// diagKey reads the 4-tuple of an inet_diag_msg.
func diagKey(msg []byte) ConnKey {
	id := msg[4:]
	sport, dport := binary.BigEndian.Uint16(id[0:]), binary.BigEndian.Uint16(id[2:])
	var src, dst netip.Addr
	if msg[0] == unix.AF_INET {
		src, dst = netip.AddrFrom4([4]byte(id[4:8])), netip.AddrFrom4([4]byte(id[20:24]))
	} else {
		src, dst = netip.AddrFrom16([16]byte(id[4:20])).Unmap(), netip.AddrFrom16([16]byte(id[20:36])).Unmap()
	}
	return ConnKey{Local: netip.AddrPortFrom(src, sport), Remote: netip.AddrPortFrom(dst, dport)}
}

// storageValue finds the map value in an inet_diag_msg's attributes
// (INET_DIAG_SK_BPF_STORAGES > SK_DIAG_BPF_STORAGE > MAP_VALUE): only
// the map asked for is there.
func storageValue(b []byte) []byte {
	for _, outer := range attrs(b) {
		if outer.typ != inetDiagSkBPFStorages {
			continue
		}
		for _, st := range attrs(outer.val) {
			if st.typ != unix.SK_DIAG_BPF_STORAGE {
				continue
			}
			for _, f := range attrs(st.val) {
				if f.typ == unix.SK_DIAG_BPF_STORAGE_MAP_VALUE {
					return f.val
				}
			}
		}
	}
	return nil
}

type attr struct {
	typ uint16
	val []byte
}

// attrs splits netlink attributes (nested-flag bits cleared).
func attrs(b []byte) []attr {
	var out []attr
	for len(b) >= unix.SizeofRtAttr {
		l := int(binary.NativeEndian.Uint16(b))
		if l < unix.SizeofRtAttr || l > len(b) {
			break
		}
		out = append(out, attr{typ: binary.NativeEndian.Uint16(b[2:]) &^ (unix.NLA_F_NESTED | unix.NLA_F_NET_BYTEORDER), val: b[unix.SizeofRtAttr:l]})
		b = b[min(len(b), (l+unix.RTA_ALIGNTO-1)&^(unix.RTA_ALIGNTO-1)):]
	}
	return out
}
