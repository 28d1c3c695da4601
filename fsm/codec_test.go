package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"testing"
	"time"
)

// TestEncodeGolden pins the wire bytes: changing them breaks every log.
func TestEncodeGolden(t *testing.T) {
	ts := time.Unix(0, 1_700_000_000_123_456_789)
	cases := []struct {
		typ  MsgType
		p    any
		want string
	}{
		{MsgJoinTokenRevoke, JoinTokenRevoke{ID: "abc"}, "\x07" + `{"v":1,"ts":1700000000123456789,"p":{"id":"abc"}}`},
		{MsgPruneRevocations, PruneRevocations{}, "\x09" + `{"v":1,"ts":1700000000123456789,"p":{}}`},
		{MsgRevoke, &Revoke{Revocation: Revocation{Kind: RevocationCert, ID: "1f"}},
			"\x08" + `{"v":1,"ts":1700000000123456789,"p":{"revocation":{"kind":"cert","id":"1f"}}}`},
		{MsgPolicySet, PolicySet{Text: "permit", ExpectVersion: 2}, "\x12" + `{"v":1,"ts":1700000000123456789,"p":{"text":"permit","expect_version":2}}`},
		{IgnoreUnknownFlag | 0x70, map[string]int{"a": 1}, "\xf0" + `{"v":1,"ts":1700000000123456789,"p":{"a":1}}`},
	}
	for _, tc := range cases {
		got, err := Encode(tc.typ, ts, tc.p)
		if err != nil {
			t.Fatalf("%v: %v", tc.typ, err)
		}
		if string(got) != tc.want {
			t.Errorf("%v:\n got %q\nwant %q", tc.typ, got, tc.want)
		}
		env, err := Decode(got)
		if err != nil || env.Type != tc.typ || env.Version != 1 || !env.Time.Equal(ts) || env.Time.Location() != time.UTC {
			t.Errorf("%v: decode = %+v, %v", tc.typ, env, err)
		}
	}
	// The message type numbers are part of the format too.
	if MsgServerPut != 1 || MsgRouteAuthPut != 19 || MsgNodeCertRenew != 24 || IgnoreUnknownFlag != 0x80 {
		t.Fatal("message type numbers moved")
	}
}

func TestEncodeRejects(t *testing.T) {
	cases := []struct {
		name string
		typ  MsgType
		ts   time.Time
		p    any
	}{
		{"wrong payload type", MsgRevoke, t0, ServerRemove{Name: "x"}},
		{"nil payload", MsgRevoke, t0, nil},
		{"zero time", MsgServerRemove, time.Time{}, ServerRemove{Name: "x"}},
		{"time before 1970", MsgServerRemove, time.Date(1960, 1, 1, 0, 0, 0, 0, time.UTC), ServerRemove{Name: "x"}},
		{"unknown type without flag", 0x70, t0, map[string]int{}},
		{"type zero", 0, t0, map[string]int{}},
		{"invalid payload", MsgServerRemove, t0, ServerRemove{}},
		{"expired token", MsgJoinTokenCreate, t0, JoinTokenCreate{Token: JoinToken{ID: "a", Hash: hashOf("a"), Kind: TokenKindNode, Uses: 1, Expiry: t0}}},
		{"payload not an object", IgnoreUnknownFlag | 0x70, t0, []int{1}},
		{"too big", MsgPolicySet, t0, PolicySet{Text: strings.Repeat("a", MaxCommandSize)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			data, err := Encode(tc.typ, tc.ts, tc.p)
			var ce *CommandError
			if !errors.Is(err, ErrInvalid) || !errors.As(err, &ce) || ce.Type != tc.typ || data != nil {
				t.Fatalf("Encode = %q, %v", data, err)
			}
		})
	}
	// Encode checks a copy: the caller's payload is not normalised.
	rv := Revoke{Revocation: Revocation{Kind: RevocationKey, ID: "k", Time: t0.Add(-time.Hour)}}
	if _, err := Encode(MsgRevoke, t0, &rv); err != nil {
		t.Fatal(err)
	}
	if !rv.Revocation.Time.Equal(t0.Add(-time.Hour)) {
		t.Fatal("Encode changed the caller's payload")
	}
}

// badEnvelopes must all be rejected by Decode with ErrInvalid (and by
// Apply without changing anything).
var badEnvelopes = []struct {
	name string
	data string
}{
	{"empty", ""},
	{"type only", "\x02"},
	{"not json", "\x02hello"},
	{"array", "\x02[1,2]"},
	{"null", "\x02null"},
	{"missing v", "\x02" + `{"ts":1,"p":{}}`},
	{"v zero", "\x02" + `{"v":0,"ts":1,"p":{}}`},
	{"v string", "\x02" + `{"v":"1","ts":1,"p":{}}`},
	{"v too big", "\x02" + `{"v":70000,"ts":1,"p":{}}`},
	{"v negative", "\x02" + `{"v":-1,"ts":1,"p":{}}`},
	{"missing ts", "\x02" + `{"v":1,"p":{}}`},
	{"ts zero", "\x02" + `{"v":1,"ts":0,"p":{}}`},
	{"ts negative", "\x02" + `{"v":1,"ts":-5,"p":{}}`},
	{"ts float", "\x02" + `{"v":1,"ts":1.5,"p":{}}`},
	{"ts overflow", "\x02" + `{"v":1,"ts":99999999999999999999,"p":{}}`},
	{"missing p", "\x02" + `{"v":1,"ts":1}`},
	{"p null", "\x02" + `{"v":1,"ts":1,"p":null}`},
	{"p string", "\x02" + `{"v":1,"ts":1,"p":"x"}`},
	{"unknown envelope field", "\x02" + `{"v":1,"ts":1,"p":{},"sig":"x"}`},
	{"trailing garbage", "\x02" + `{"v":1,"ts":1,"p":{}}x`},
	{"two objects", "\x02" + `{"v":1,"ts":1,"p":{}}{}`},
	{"truncated", "\x02" + `{"v":1,"ts":1,"p":{`},
	{"too big", "\x02" + `{"v":1,"ts":1,"p":{"name":"` + strings.Repeat("a", MaxCommandSize) + `"}}`},
}

func TestDecodeRejects(t *testing.T) {
	for _, tc := range badEnvelopes {
		t.Run(tc.name, func(t *testing.T) {
			env, err := Decode([]byte(tc.data))
			var ce *CommandError
			if !errors.Is(err, ErrInvalid) || !errors.As(err, &ce) {
				t.Fatalf("Decode = %+v, %v", env, err)
			}
			if len(tc.data) > 0 && ce.Type != MsgType(tc.data[0]) {
				t.Fatalf("error type %v", ce.Type)
			}
		})
	}
}

func TestApplyRejectsBadEnvelopes(t *testing.T) {
	h := newHarness(t)
	h.seed()
	before := h.s.Hash()
	for _, tc := range badEnvelopes {
		res := h.raw([]byte(tc.data))
		if !errors.Is(res.Err, ErrInvalid) {
			t.Errorf("%s: %+v", tc.name, res)
		}
	}
	if h.s.Hash() != before {
		t.Fatal("bad envelopes changed the state")
	}
}

func TestErrorCodes(t *testing.T) {
	for _, c := range errorCodes {
		err := &CommandError{Type: MsgRevoke, Err: c.err, Detail: "d"}
		code := ErrorCode(fmt.Errorf("wrapped: %w", err))
		if code != c.code {
			t.Fatalf("ErrorCode(%v) = %q, want %q", c.err, code, c.code)
		}
		back := ErrorFromCode(code, err.Error())
		if !errors.Is(back, c.err) {
			t.Fatalf("ErrorFromCode(%q) = %v does not match %v", code, back, c.err)
		}
		if back.Error() != err.Error() {
			t.Fatalf("message %q, want %q", back.Error(), err.Error())
		}
		if short := ErrorFromCode(code, "no such thing"); short.Error() != strings.TrimSuffix(c.err.Error(), "")+": no such thing" {
			t.Fatalf("message %q", short.Error())
		}
	}
	if ErrorCode(nil) != "" || ErrorFromCode("", "x") != nil {
		t.Fatal("nil round trip")
	}
	if ErrorCode(errors.New("boom")) != CodeInternal {
		t.Fatal("foreign error")
	}
	if err := ErrorFromCode("martian", "x"); err == nil || ErrorCode(err) != CodeInternal {
		t.Fatalf("unknown code gave %v", err)
	}
	// Codes are unique.
	seen := map[string]bool{}
	for _, c := range errorCodes {
		if seen[c.code] {
			t.Fatalf("duplicate code %q", c.code)
		}
		seen[c.code] = true
	}
	msg := (&CommandError{Type: MsgJoinTokenConsume, Err: ErrTokenExhausted, Detail: "token x"}).Error()
	if msg != "fsm: join_token_consume: join token has no uses left: token x" {
		t.Fatalf("message %q", msg)
	}
}

func TestMsgTypeString(t *testing.T) {
	for typ := MsgType(1); typ < msgTypeEnd; typ++ {
		if s := typ.String(); s == "" || strings.HasPrefix(s, "msg_") {
			t.Errorf("%d has no name", typ)
		}
	}
	if s := (IgnoreUnknownFlag | 0x42).String(); s != "msg_0x42+ignorable" {
		t.Fatal(s)
	}
	if s := (IgnoreUnknownFlag | MsgRevoke).String(); s != "revoke+ignorable" {
		t.Fatal(s)
	}
}

func TestFormatSerial(t *testing.T) {
	for _, n := range []int64{1, 15, 16, 255, 1 << 40} {
		s := FormatSerial(big.NewInt(n))
		if err := checkSerial("s", s, true); err != nil {
			t.Fatalf("%d -> %q: %v", n, s, err)
		}
	}
	big20 := new(big.Int).SetBytes(bytes.Repeat([]byte{0xff}, 20))
	if err := checkSerial("s", FormatSerial(big20), true); err != nil {
		t.Fatal(err)
	}
}

func TestDNSNames(t *testing.T) {
	if err := checkDNSNames("d", []string{"a", "A.example", "*.x.example", "x-1.y"}); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"", "*.", "*", "a..b", "-a", "a b", "a_b", "*.*.a", "a.*", strings.Repeat("a", 64)} {
		if err := checkDNSNames("d", []string{bad}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if err := checkDNSNames("d", make([]string, MaxDNSNames+1)); err == nil {
		t.Error("too many accepted")
	}
}

func TestNetworkNames(t *testing.T) {
	for _, ok := range []string{"a", "mainnet.example.net", "x-1.y", strings.Repeat("a", 63) + ".b"} {
		if err := checkNetwork("n", ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", ".", "a.", ".a", "a..b", "-a", "a-", "A.b", "a_b", "a b", strings.Repeat("a", 64), strings.Repeat("a.", 127) + "a"} {
		if err := checkNetwork("n", bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestCheckASN(t *testing.T) {
	for _, ok := range []uint32{1, 64500, 65534, 65536, 23455, 23457, 4200000000, 4294967294} {
		if err := CheckASN(ok); err != nil {
			t.Errorf("AS %d: %v", ok, err)
		}
	}
	for _, bad := range []uint32{0, 23456, 65535, 4294967295} {
		if err := CheckASN(bad); !errors.Is(err, ErrASN) {
			t.Errorf("AS %d: err %v, want ErrASN", bad, err)
		}
	}
}
