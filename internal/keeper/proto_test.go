package keeper

import (
	"bytes"
	"strings"
	"testing"
)

func TestMessageRoundTrip(t *testing.T) {
	for _, m := range []message{
		{op: opHello},
		{op: opPut, key: "k", meta: []byte("meta")},
		{op: opPut, key: strings.Repeat("k", MaxKey), meta: bytes.Repeat([]byte{0}, MaxMeta)},
		{op: opEnd, meta: []byte{1, 0, 0, 0}},
	} {
		b := m.marshal()
		if len(b) > maxMsg {
			t.Errorf("%q: %d bytes, over maxMsg", m.op, len(b))
		}
		got, err := parse(b)
		if err != nil {
			t.Fatalf("%q: %v", m.op, err)
		}
		if got.op != m.op || got.key != m.key || !bytes.Equal(got.meta, m.meta) {
			t.Errorf("round trip of %+v gave %+v", m, got)
		}
	}
}

func TestParseRejects(t *testing.T) {
	good := message{op: opPut, key: "key", meta: []byte("meta")}.marshal()
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"short", good[:hdrLen-1]},
		{"truncated", good[:len(good)-1]},
		{"trailing", append(append([]byte(nil), good...), 0)},
		{"version", func() []byte { b := append([]byte(nil), good...); b[1] = 9; return b }()},
		{"key-len", func() []byte { b := append([]byte(nil), good...); b[2], b[3] = 0xff, 0xff; return b }()},
		{"meta-len", func() []byte { b := append([]byte(nil), good...); b[7] = 0x80; return b }()},
	} {
		if _, err := parse(tc.b); err == nil {
			t.Errorf("%s: parsed", tc.name)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add(message{op: opPut, key: "key", meta: []byte("meta")}.marshal())
	f.Add(message{op: opFetch}.marshal())
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parse(b)
		if err != nil {
			return
		}
		if len(m.key) > MaxKey || len(m.meta) > MaxMeta {
			t.Fatalf("parsed key %d meta %d bytes, over the limits", len(m.key), len(m.meta))
		}
		if got := m.marshal(); !bytes.Equal(got, b) {
			t.Fatalf("marshal(parse(%x)) = %x", b, got)
		}
	})
}
