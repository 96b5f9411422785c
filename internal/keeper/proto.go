package keeper

import (
	"encoding/binary"
	"fmt"
)

// The wire format (see the package doc): an 8-byte header, then the key,
// then the meta bytes.
const (
	protoVersion = 1
	hdrLen       = 8
	// maxMsg is the largest message either side sends or accepts.
	maxMsg = hdrLen + MaxKey + MaxMeta
)

// Operations. Requests go from client to keeper, replies back.
const (
	opHello byte = 'H' // request: nothing; reply ok
	opPut   byte = 'P' // request: key, meta, one fd; reply ok
	opDrop  byte = 'D' // request: key; reply ok
	opFetch byte = 'F' // request: nothing; reply item* end
	opOK    byte = 'K' // reply
	opError byte = 'E' // reply: the error text in meta
	opItem  byte = 'I' // reply to fetch: key, meta, one fd
	opEnd   byte = 'N' // reply to fetch: the item count (uint32) in meta
)

// message is one decoded message.
type message struct {
	op   byte
	key  string
	meta []byte
}

// marshal encodes m. The caller has checked the bounds (checkKeyMeta).
func (m message) marshal() []byte {
	b := make([]byte, hdrLen, hdrLen+len(m.key)+len(m.meta))
	b[0] = m.op
	b[1] = protoVersion
	binary.LittleEndian.PutUint16(b[2:], uint16(len(m.key)))
	binary.LittleEndian.PutUint32(b[4:], uint32(len(m.meta)))
	b = append(b, m.key...)
	return append(b, m.meta...)
}

// parse decodes one whole message. The meta slice aliases b.
func parse(b []byte) (message, error) {
	if len(b) < hdrLen {
		return message{}, fmt.Errorf("message of %d bytes, shorter than the header", len(b))
	}
	if b[1] != protoVersion {
		return message{}, fmt.Errorf("protocol version %d, want %d", b[1], protoVersion)
	}
	kl := int(binary.LittleEndian.Uint16(b[2:]))
	ml := binary.LittleEndian.Uint32(b[4:])
	if kl > MaxKey || ml > MaxMeta {
		return message{}, fmt.Errorf("key of %d or meta of %d bytes over the limit", kl, ml)
	}
	if len(b) != hdrLen+kl+int(ml) {
		return message{}, fmt.Errorf("message of %d bytes, header says %d", len(b), hdrLen+kl+int(ml))
	}
	m := message{op: b[0], key: string(b[hdrLen : hdrLen+kl])}
	if ml > 0 {
		m.meta = b[hdrLen+kl:]
	}
	return m, nil
}
