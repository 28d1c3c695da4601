package rtr

import (
	"bytes"
	"encoding/hex"
	"errors"
	"io"
	"net/netip"
	"strings"
	"testing"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// goldenPDUs are one of each PDU with its bytes written out by hand from
// the layouts of RFC 8210 section 5 (and RFC 6810 section 5 for version
// 0's End of Data): version, type, session id or zero or error code,
// length, then the body. They must never change.
var goldenPDUs = []struct {
	name string
	pdu  PDU
	hex  string
}{
	{"serial notify", PDU{Version: 1, Type: TypeSerialNotify, Session: 0x1234, Serial: 0x01020304}, "01 00 1234 0000000c 01020304"},
	{"serial query", PDU{Version: 1, Type: TypeSerialQuery, Session: 0xbeef, Serial: 42}, "01 01 beef 0000000c 0000002a"},
	{"reset query v0", PDU{Version: 0, Type: TypeResetQuery}, "00 02 0000 00000008"},
	{"cache response", PDU{Version: 1, Type: TypeCacheResponse, Session: 7}, "01 03 0007 00000008"},
	{"ipv4 prefix", PDU{Version: 1, Type: TypeIPv4Prefix, Announce: true, Prefix: netip.MustParsePrefix("192.0.2.0/24"), MaxLen: 24, ASN: 64496},
		"01 04 0000 00000014 01 18 18 00 c0000200 0000fbf0"},
	{"ipv6 withdraw", PDU{Version: 1, Type: TypeIPv6Prefix, Prefix: netip.MustParsePrefix("2001:db8::/32"), MaxLen: 48, ASN: 4200000000},
		"01 06 0000 00000020 00 20 30 00 20010db8000000000000000000000000 fa56ea00"},
	{"end of data v1", PDU{Version: 1, Type: TypeEndOfData, Session: 0x00ff, Serial: 9, Refresh: 3600, Retry: 600, Expire: 7200},
		"01 07 00ff 00000018 00000009 00000e10 00000258 00001c20"},
	{"end of data v0", PDU{Version: 0, Type: TypeEndOfData, Session: 0x00ff, Serial: 9}, "00 07 00ff 0000000c 00000009"},
	{"cache reset", PDU{Version: 1, Type: TypeCacheReset}, "01 08 0000 00000008"},
	{"error report", PDU{Version: 1, Type: TypeErrorReport, Code: CodeCorruptData, Encapsulated: []byte{1, 2, 0, 0, 0, 0, 0, 8}, Text: "bad"},
		"01 0a 0000 0000001b 00000008 0102000000000008 00000003 626164"},
}

func TestGoldenPDUs(t *testing.T) {
	for _, g := range goldenPDUs {
		t.Run(g.name, func(t *testing.T) {
			want := unhex(t, g.hex)
			if got := g.pdu.Append(nil); !bytes.Equal(got, want) {
				t.Fatalf("encoding\n got %x\nwant %x", got, want)
			}
			if n := g.pdu.Length(); n != len(want) {
				t.Errorf("Length %d, encoding %d bytes", n, len(want))
			}
			p, err := Decode(want)
			if err != nil {
				t.Fatal(err)
			}
			if got := p.Append(nil); !bytes.Equal(got, want) {
				t.Errorf("decoded and encoded again\n got %x\nwant %x", got, want)
			}
		})
	}
}

// TestDecodeBad is the table of bad PDUs: each refused with the Error
// Report code a cache answers it with.
func TestDecodeBad(t *testing.T) {
	for _, c := range []struct {
		name string
		hex  string
		code ErrorCode
	}{
		{"empty", "", CodeCorruptData},
		{"short header", "01 02 0000 0000", CodeCorruptData},
		{"length field too large", "01 02 0000 00000009", CodeCorruptData},
		{"length field too small", "01 02 0000 00000007 00", CodeCorruptData},
		{"version 2", "02 02 0000 00000008", CodeUnsupportedVersion},
		{"version 255", "ff 01 0000 0000000c 00000000", CodeUnsupportedVersion},
		{"unknown type", "01 05 0000 00000008", CodeUnsupportedPDUType},
		{"router key", "01 09 0000 00000008", CodeUnsupportedPDUType},
		{"router key v0", "00 09 0000 00000008", CodeUnsupportedPDUType},
		{"reset query with a body", "01 02 0000 0000000c 00000000", CodeCorruptData},
		{"reset query with a session", "01 02 0001 00000008", CodeCorruptData},
		{"serial query short", "01 01 0001 00000008", CodeCorruptData},
		{"cache reset with a session", "01 08 0001 00000008", CodeCorruptData},
		{"end of data v1 short", "01 07 0001 0000000c 00000001", CodeCorruptData},
		{"end of data v0 long", "00 07 0001 00000018 00000001 00000001 00000001 00000001", CodeCorruptData},
		{"ipv4 prefix length 33", "01 04 0000 00000014 01 21 21 00 c0000200 0000fbf0", CodeCorruptData},
		{"ipv4 max below length", "01 04 0000 00000014 01 18 10 00 c0000200 0000fbf0", CodeCorruptData},
		{"ipv4 host bits", "01 04 0000 00000014 01 10 18 00 c0000201 0000fbf0", CodeCorruptData},
		{"ipv4 flags", "01 04 0000 00000014 03 18 18 00 c0000200 0000fbf0", CodeCorruptData},
		{"ipv4 reserved", "01 04 0000 00000014 01 18 18 01 c0000200 0000fbf0", CodeCorruptData},
		{"ipv4 zero field", "01 04 0001 00000014 01 18 18 00 c0000200 0000fbf0", CodeCorruptData},
		{"ipv6 short", "01 06 0000 00000014 01 18 18 00 c0000200 0000fbf0", CodeCorruptData},
		{"ipv6 length 129", "01 06 0000 00000020 01 81 81 00 20010db8000000000000000000000000 fa56ea00", CodeCorruptData},
		{"error report no lengths", "01 0a 0000 00000008", CodeCorruptData},
		{"error report pdu past end", "01 0a 0000 00000010 000000ff 00000000", CodeCorruptData},
		{"error report no text length", "01 0a 0000 00000010 00000004 01020304", CodeCorruptData},
		{"error report text past end", "01 0a 0000 00000010 00000000 00000005", CodeCorruptData},
		{"error report text short", "01 0a 0000 00000012 00000000 00000001 4142", CodeCorruptData},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Decode(unhex(t, c.hex))
			var pe *ProtocolError
			if !errors.As(err, &pe) {
				t.Fatalf("Decode: %v, want a *ProtocolError", err)
			}
			if pe.Code != c.code {
				t.Errorf("code %s, want %s (%v)", pe.Code, c.code, err)
			}
			if c.code == CodeCorruptData && !errors.Is(err, ErrMalformed) {
				t.Errorf("%v is not ErrMalformed", err)
			}
		})
	}
}

func TestReaderLimits(t *testing.T) {
	// a length past the limit is refused from the header, before the body
	big := unhex(t, "01 0a 0000 00010000")
	r := NewReader(io.MultiReader(bytes.NewReader(big), failReader{}), 1024)
	_, err := r.ReadRaw()
	var pe *ProtocolError
	if !errors.As(err, &pe) || !errors.Is(err, ErrTooLong) || pe.Code != CodeCorruptData || len(pe.PDU) != headerLen {
		t.Fatalf("ReadRaw of a PDU past the limit: %v", err)
	}
	// a stream cut inside a PDU
	r = NewReader(bytes.NewReader(unhex(t, "01 01 0000 0000000c 0000")), 0)
	if _, err := r.ReadRaw(); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("cut PDU: %v, want io.ErrUnexpectedEOF", err)
	}
	// a clean end between PDUs
	r = NewReader(bytes.NewReader(unhex(t, "01 02 0000 00000008")), 0)
	if _, err := r.Read(); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Read(); !errors.Is(err, io.EOF) {
		t.Fatalf("after the last PDU: %v, want io.EOF", err)
	}
}

type failReader struct{}

func (failReader) Read([]byte) (int, error) { return 0, errors.New("the body must not be read") }

// FuzzDecode: no input panics the decoder, and what it accepts encodes
// back to the same bytes (one encoding per PDU).
func FuzzDecode(f *testing.F) {
	for _, g := range goldenPDUs {
		f.Add(unhex(f, g.hex))
	}
	f.Add([]byte{1, 10, 0, 0, 0, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Decode(b)
		if err != nil {
			var pe *ProtocolError
			if !errors.As(err, &pe) {
				t.Fatalf("error %v is not a *ProtocolError", err)
			}
			return
		}
		if got := p.Append(nil); !bytes.Equal(got, b) {
			t.Fatalf("%x decoded to %s, which encodes to %x", b, p.String(), got)
		}
	})
}

// FuzzMachine: no stream of bytes from a router panics the session, and
// everything it sends decodes.
func FuzzMachine(f *testing.F) {
	f.Add(unhex(f, "01 02 0000 00000008"))
	f.Add(unhex(f, "00 01 1234 0000000c 00000001 01 02 0000 00000008"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c := NewCache(scriptNetwork, 4)
		c.Load(5, []VRP{{Prefix: netip.MustParsePrefix("10.0.0.0/8"), MaxLen: 8, ASN: 1}})
		m := newMachine(c, DefaultTimers)
		r := NewReader(bytes.NewReader(b), 256)
		for i := 0; i < 16; i++ {
			raw, err := r.ReadRaw()
			if err != nil && !isProtocol(err) {
				return
			}
			res := m.receive(raw, err)
			out := NewReader(bytes.NewReader(res.bytes()), 1<<20)
			for {
				if _, err := out.Read(); errors.Is(err, io.EOF) {
					break
				} else if err != nil {
					t.Fatalf("the cache sent a PDU it cannot decode: %v", err)
				}
			}
			if res.close {
				return
			}
			c.Update(uint64(6+i), map[netip.Prefix][]VRP{netip.MustParsePrefix("10.1.0.0/16"): {{Prefix: netip.MustParsePrefix("10.1.0.0/16"), MaxLen: uint8(16 + i%8), ASN: 2}}})
		}
	})
}

// TestAppendPrefix: the fast encoder of a full answer writes what
// PDU.Append writes.
func TestAppendPrefix(t *testing.T) {
	for _, v := range []VRP{{netip.MustParsePrefix("192.0.2.0/24"), 24, 64496}, {netip.MustParsePrefix("2001:db8::/32"), 48, 4200000000}, {netip.MustParsePrefix("0.0.0.0/0"), 32, 1}} {
		for _, ver := range []uint8{0, 1} {
			for _, ann := range []bool{true, false} {
				p := v.pdu(ver, ann)
				if got, want := appendPrefix(nil, ver, ann, v), p.Append(nil); !bytes.Equal(got, want) {
					t.Errorf("%v v%d %v: %x, want %x", v, ver, ann, got, want)
				}
			}
		}
	}
}

// pdu is v as a PDU, for comparing appendPrefix with PDU.Append.
func (v VRP) pdu(version uint8, announce bool) PDU {
	t := TypeIPv4Prefix
	if v.Prefix.Addr().Is6() {
		t = TypeIPv6Prefix
	}
	return PDU{Version: version, Type: t, Announce: announce, Prefix: v.Prefix, MaxLen: v.MaxLen, ASN: v.ASN}
}
