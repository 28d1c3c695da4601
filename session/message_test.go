package session

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
)

// goldenMessages are one of each message, with every field set, as their
// frames must stay byte for byte (testdata/messages.golden).
func goldenMessages() []struct {
	name string
	t    MsgType
	m    any
} {
	return []struct {
		name string
		t    MsgType
		m    any
	}{
		{"open", MsgOpen, Open{NodeID: "edge-1", Network: "mainnet.example.net", HoldTime: 30,
			Capabilities: []uint16{CapRouteRefresh, CapSignedRoutes}, Role: RoleCustomer, Token: "eyJ.x.y",
			PSKID: "0123456789abcdef", PSKMAC: bytes.Repeat([]byte{0xAB}, 32)}},
		{"open-minimal", MsgOpen, Open{NodeID: "a", Network: "n.example", Token: "t"}},
		{"open-memberships", MsgOpen, Open{NodeID: "a", Network: "n.example", Token: "t", Memberships: []string{"m.example", "o.example"}}},
		{"keepalive", MsgKeepalive, Keepalive{}},
		{"update", MsgUpdate, Update{Payload: []byte("route")}},
		{"notification", MsgNotification, Notification{Code: CodeCease, Subcode: SubCeaseRevoked, Reason: "node revoked: edge-2"}},
		{"route-refresh", MsgRouteRefresh, RouteRefresh{Family: 1}},
		{"route-refresh-all", MsgRouteRefresh, RouteRefresh{}},
	}
}

// TestGoldenFrames: each message's frame is pinned byte for byte: the
// encoding is canonical and a change of it is a change of the protocol
// (a new FrameVersion), not an accident.
func TestGoldenFrames(t *testing.T) {
	var b strings.Builder
	for _, g := range goldenMessages() {
		body, err := Encode(g.m)
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString(g.name + " " + hex.EncodeToString(AppendFrame(nil, g.t, body)) + "\n")
	}
	const file = "testdata/messages.golden"
	if *rewrite {
		if err := os.WriteFile(file, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("%v (write it with -rewrite)", err)
	}
	if b.String() != string(want) {
		t.Fatalf("frames differ from %s:\n got\n%s want\n%s", file, b.String(), want)
	}
	// And they read back to the same messages.
	for _, line := range strings.Split(strings.TrimSpace(string(want)), "\n") {
		name, h, _ := strings.Cut(line, " ")
		raw, _ := hex.DecodeString(h)
		f, err := NewFrameReader(bytes.NewReader(raw), DefaultMaxFrame).Read()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if _, err := decodeBody(f); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
}

// decodeBody decodes a frame's body by its type.
func decodeBody(f Frame) (any, error) {
	switch f.Type {
	case MsgOpen:
		return DecodeOpen(f.Body)
	case MsgUpdate:
		return DecodeUpdate(f.Body)
	case MsgNotification:
		return DecodeNotification(f.Body)
	case MsgRouteRefresh:
		return DecodeRouteRefresh(f.Body)
	}
	return Keepalive{}, nil
}

// TestBadFrames: frames the reader refuses, each with its NOTIFICATION.
func TestBadFrames(t *testing.T) {
	open, _ := Encode(Open{NodeID: "a", Network: "n.example", Token: "t"})
	big := make([]byte, DefaultMaxFrame)
	for _, c := range []struct {
		name string
		in   []byte
		err  error
		sub  uint8
	}{
		{"bad magic", []byte("HTTP/1.1 200 OK\r\n"), ErrBadMagic, SubNotSynchronized},
		{"other version", []byte{0x4B, 0x4D, 2, 1, 0, 0, 0, 1, 0}, ErrBadVersion, SubBadVersion},
		{"unknown type", []byte{0x4B, 0x4D, 1, 9, 0, 0, 0, 1, 0}, ErrBadType, SubBadType},
		{"type zero", []byte{0x4B, 0x4D, 1, 0, 0, 0, 0, 1, 0}, ErrBadType, SubBadType},
		{"over the limit", AppendFrame(nil, MsgUpdate, big), ErrFrameTooLarge, SubBadLength},
		{"length of 4 GiB", []byte{0x4B, 0x4D, 1, 2, 0xFF, 0xFF, 0xFF, 0xFF}, ErrFrameTooLarge, SubBadLength},
		{"keepalive with a body", AppendFrame(nil, MsgKeepalive, []byte{1}), ErrBadLength, SubBadLength},
		{"open without a body", AppendFrame(nil, MsgOpen, nil), ErrBadLength, SubBadLength},
		{"truncated header", []byte{0x4B, 0x4D, 1}, ErrTruncated, SubBadLength},
		{"truncated body", AppendFrame(nil, MsgOpen, open)[:HeaderLen+3], ErrTruncated, SubBadLength},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := NewFrameReader(bytes.NewReader(c.in), DefaultMaxFrame).Read()
			var fe *FrameError
			if !errors.Is(err, c.err) || !errors.As(err, &fe) || fe.Notification.Code != CodeHeader || fe.Notification.Subcode != c.sub {
				t.Fatalf("got %v, want %v with header/%d", err, c.err, c.sub)
			}
		})
	}
	// A frame exactly at the limit is read.
	body := make([]byte, DefaultMaxFrame-HeaderLen)
	if _, err := NewFrameReader(bytes.NewReader(AppendFrame(nil, MsgUpdate, body)), DefaultMaxFrame).Read(); err != nil {
		t.Fatalf("a frame at the limit: %v", err)
	}
}

// TestBadMessages: bodies the decoders refuse: not CBOR, not canonical,
// unknown or duplicated keys, missing fields, over the limits.
func TestBadMessages(t *testing.T) {
	canon, _ := Encode(Open{NodeID: "a", Network: "n.example", Token: "t"})
	for _, c := range []struct {
		name string
		body []byte
	}{
		{"not CBOR", []byte("{\"node_id\":\"a\"}")},
		{"empty map", []byte{0xA0}},
		{"trailing bytes", append(append([]byte(nil), canon...), 0x00)},
		{"indefinite map", []byte{0xBF, 0x01, 0x61, 'a', 0xFF}},
		{"unknown key", []byte{0xA4, 0x01, 0x61, 'a', 0x02, 0x61, 'n', 0x06, 0x61, 't', 0x18, 0x63, 0x00}},
		{"duplicate key", []byte{0xA4, 0x01, 0x61, 'a', 0x01, 0x61, 'b', 0x02, 0x61, 'n', 0x06, 0x61, 't'}},
		{"non-shortest integer", []byte{0xA5, 0x01, 0x61, 'a', 0x02, 0x61, 'n', 0x03, 0x18, 0x05, 0x05, 0x00, 0x06, 0x61, 't'}},
		{"no token", mustEncode(t, Open{NodeID: "a", Network: "n.example"})},
		{"bad role", mustEncode(t, Open{NodeID: "a", Network: "n.example", Token: "t", Role: 9})},
		{"mac without id", mustEncode(t, Open{NodeID: "a", Network: "n.example", Token: "t", PSKMAC: []byte{1}})},
		{"token over the limit", mustEncode(t, Open{NodeID: "a", Network: "n.example", Token: strings.Repeat("t", MaxTokenLen+1)})},
		{"invalid UTF-8", []byte{0xA3, 0x01, 0x62, 0xC3, 0x28, 0x02, 0x61, 'n', 0x06, 0x61, 't'}},
		{"memberships naming its own network", mustEncode(t, Open{NodeID: "a", Network: "n.example", Token: "t", Memberships: []string{"n.example"}})},
		{"memberships not sorted", mustEncode(t, Open{NodeID: "a", Network: "n.example", Token: "t", Memberships: []string{"o.example", "m.example"}})},
		{"memberships twice", mustEncode(t, Open{NodeID: "a", Network: "n.example", Token: "t", Memberships: []string{"m.example", "m.example"}})},
		{"an empty membership", mustEncode(t, Open{NodeID: "a", Network: "n.example", Token: "t", Memberships: []string{""}})},
		{"memberships over the limit", mustEncode(t, Open{NodeID: "a", Network: "n.example", Token: "t", Memberships: manyNetworks(MaxMemberships + 1)})},
		{"a membership over the length limit", mustEncode(t, Open{NodeID: "a", Network: "n.example", Token: "t", Memberships: []string{strings.Repeat("m", MaxNodeIDLen+1)}})},
		{"a tag", []byte{0xC1, 0xA0}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if o, err := DecodeOpen(c.body); !errors.Is(err, ErrMalformed) {
				t.Fatalf("decoded %+v (%v), want ErrMalformed", o, err)
			}
		})
	}
	if _, err := DecodeNotification(mustEncode(t, Notification{Reason: "no code"})); !errors.Is(err, ErrMalformed) {
		t.Fatalf("NOTIFICATION without a code: %v", err)
	}
	if _, err := DecodeUpdate(mustEncode(t, Update{})); !errors.Is(err, ErrMalformed) {
		t.Fatalf("UPDATE without a payload: %v", err)
	}
}

// manyNetworks is n sorted network names.
func manyNetworks(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("m%03d.example", i)
	}
	return out
}

func mustEncode(t *testing.T, m any) []byte {
	t.Helper()
	b, err := Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// FuzzFrame: whatever a peer sends, the reader returns frames within the
// limit or an error; a decoded body encodes back to itself; no panic.
func FuzzFrame(f *testing.F) {
	for _, g := range goldenMessages() {
		body, _ := Encode(g.m)
		f.Add(AppendFrame(nil, g.t, body))
	}
	f.Add([]byte{0x4B, 0x4D, 1, 2, 0xFF, 0xFF, 0xFF, 0xFF})
	f.Add([]byte("GET / HTTP/1.1\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		fr := NewFrameReader(bytes.NewReader(in), MinMaxFrame)
		for i := 0; i < 16; i++ {
			fm, err := fr.Read()
			if err != nil {
				var fe *FrameError
				if err.Error() != "EOF" && !errors.As(err, &fe) {
					t.Fatalf("error neither EOF nor a FrameError: %v", err)
				}
				return
			}
			if len(fm.Body)+HeaderLen > MinMaxFrame {
				t.Fatalf("a frame of %d bytes passed a limit of %d", len(fm.Body)+HeaderLen, MinMaxFrame)
			}
			m, err := decodeBody(fm)
			if err != nil {
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("body error not ErrMalformed: %v", err)
				}
				continue
			}
			if fm.Type != MsgKeepalive {
				again, err := Encode(m)
				if err != nil || !bytes.Equal(again, fm.Body) {
					t.Fatalf("%s decoded from %x encodes to %x", fm.Type, fm.Body, again)
				}
			}
		}
	})
}

// FuzzOpen: OPEN bodies decode strictly or are refused; no panic.
func FuzzOpen(f *testing.F) {
	for _, g := range goldenMessages() {
		if g.t == MsgOpen {
			b, _ := Encode(g.m)
			f.Add(b)
		}
	}
	f.Add([]byte{0xA0})
	f.Fuzz(func(t *testing.T, b []byte) {
		o, err := DecodeOpen(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error not ErrMalformed: %v", err)
			}
			return
		}
		if o.NodeID == "" || o.Token == "" || len(o.Token) > MaxTokenLen {
			t.Fatalf("accepted %+v", o)
		}
	})
}
