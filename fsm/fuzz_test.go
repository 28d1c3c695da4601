package fsm

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"testing"
	"time"
)

// fuzzSeeds are valid commands of every type (against the seeded store).
func fuzzSeeds() [][]byte {
	later := t0.Add(48 * time.Hour)
	ts := t0.Add(time.Hour)
	p := []struct {
		t MsgType
		p any
	}{
		{MsgServerPut, ServerPut{Server: Server{Name: "root-3", RaftAddr: "r:1", APIAddr: "r:2", Status: ServerJoining}}},
		{MsgServerRemove, ServerRemove{Name: "root-2"}},
		{MsgGenesis, Genesis{CA: CA{Network: "b.example", Active: der("r"), SealedKey: []byte("k")}}},
		{MsgCAUpdate, CAUpdate{CA: CA{Network: testNetwork, Active: der("r"), SealedKey: []byte("k")}, ExpectModifyIndex: 1}},
		{MsgCAUpdate, CAUpdate{CA: CA{Network: testNetwork, Active: der("r"), SealedKey: []byte("k"), ASN: 64500}, ExpectModifyIndex: 1}},
		{MsgIssuerPut, IssuerPut{Issuer: Issuer{ID: "root-3", Network: testNetwork, Cert: der("i"), Status: IssuerActive}}},
		{MsgJoinTokenCreate, JoinTokenCreate{Token: JoinToken{ID: "t9", Hash: hashOf("t9"), Kind: TokenKindNode, Uses: 1, Expiry: later}}},
		{MsgJoinTokenConsume, JoinTokenConsume{Hash: hashOf("secret-1"), Kind: TokenKindNode, NodeID: "n"}},
		{MsgJoinTokenRevoke, JoinTokenRevoke{ID: "tok1"}},
		{MsgRevoke, Revoke{Revocation: Revocation{Kind: RevocationCert, ID: "a1", Reason: "r", PruneAfter: later}}},
		{MsgPruneRevocations, PruneRevocations{}},
		{MsgPruneRevocations, PruneRevocations{Issuance: true}},
		{MsgTrustAnchorPut, TrustAnchorPut{Anchor: TrustAnchor{Network: "f.example", Roots: [][]byte{der("f")}, Accept: []string{"f.example"}}}},
		{MsgTrustAnchorDelete, TrustAnchorDelete{Network: "f.example"}},
		{MsgExclusiveSet, ExclusiveSet{Network: testNetwork, Exclusive: true, ExpectModifyIndex: 6}},
		{MsgNodeCertRenew, NodeCertRenew{Cert: Issued{Issuer: "root-1", Serial: "c", NodeID: "node-a", NotAfter: later, Cert: der("c")}}},
		{MsgJWKPut, JWKPut{Key: JWK{KID: "k2", Key: json.RawMessage(`{"kty":"EC"}`), Node: "node-a", State: JWKStaged}}},
		{MsgRegistrationCreate, RegistrationCreate{Registration: Registration{ID: "r9", NodeID: "n9", Network: testNetwork, Principal: PrincipalNode, CSR: der("c")},
			TokenHash: hashOf("secret-1"), Cert: &Issued{Issuer: "root-1", Serial: "d", NodeID: "n9", NotAfter: later, Cert: der("c")}}},
		{MsgRegistrationApprove, RegistrationApprove{ID: "reg-p", Cert: Issued{Issuer: "root-1", Serial: "e", NodeID: "node-p", NotAfter: later, Cert: der("c")}}},
		{MsgRegistrationDeny, RegistrationDeny{ID: "reg-p", Reason: "no"}},
		{MsgPolicySet, PolicySet{Text: "permit"}},
		{MsgRouteAuthPut, RouteAuthPut{Auth: RouteAuth{Prefix: "10.0.0.0/8", Origins: []string{"a"}, MaxLength: 8}}},
		{MsgRouteAuthPut, RouteAuthPut{Auth: RouteAuth{Prefix: "10.0.0.0/8", Origins: []string{"a"}, MaxLength: 8, ASN: 4200000000}}},
		{MsgRouteAuthDelete, RouteAuthDelete{Prefix: "10.0.0.0/8"}},
	}
	out := make([][]byte, 0, len(p))
	for _, c := range p {
		out = append(out, rawCommand(c.t, 1, ts, c.p))
	}
	return out
}

func FuzzDecode(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	for _, b := range badEnvelopes {
		f.Add([]byte(b.data))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		env, err := Decode(data)
		if err != nil {
			var ce *CommandError
			if !errors.Is(err, ErrInvalid) || !errors.As(err, &ce) {
				t.Fatalf("error %v is not an invalid-command CommandError", err)
			}
			return
		}
		if env.Type != MsgType(data[0]) || env.Version == 0 || env.Time.UnixNano() <= 0 || len(env.Payload) == 0 || env.Payload[0] != '{' {
			t.Fatalf("accepted a bad envelope: %+v", env)
		}
		// Rebuilding the canonical framing decodes to the same envelope.
		again := append([]byte{byte(env.Type)}, `{"v":`+strconv.Itoa(int(env.Version))+`,"ts":`+strconv.FormatInt(env.Time.UnixNano(), 10)+`,"p":`...)
		again = append(append(again, env.Payload...), '}')
		env2, err := Decode(again)
		if err != nil || env2.Type != env.Type || env2.Version != env.Version || !env2.Time.Equal(env.Time) || !bytes.Equal(env2.Payload, env.Payload) {
			t.Fatalf("re-encoded envelope: %+v, %v", env2, err)
		}
	})
}

// FuzzApply applies arbitrary bytes after a known type byte to a seeded
// store: raw, or as the payload of a well-formed envelope. Apply must not
// panic, must advance the index, and a rejected command must leave the hash
// unchanged; an accepted one must survive a snapshot round trip.
func FuzzApply(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s[0], false, s[1:])
		env, _ := Decode(s)
		f.Add(s[0], true, []byte(env.Payload))
	}
	f.Add(byte(MsgRevoke), true, []byte(`{"revocation":{"kind":"cert","id":"00"}}`))
	f.Add(byte(MsgJWKPut), true, []byte(`{"key":{"kid":"k","key":{"kty":"EC","d":"x"},"node":"node-a","state":"active"}}`))
	base := newHarness(f)
	base.seed()
	snap := snapshotBytes(f, base.s)
	ts := strconv.FormatInt(t0.Add(time.Hour).UnixNano(), 10)

	f.Fuzz(func(t *testing.T, typ byte, wrap bool, body []byte) {
		typ = 1 + typ%byte(msgTypeEnd-1)
		for !MsgType(typ).Known() { // a known type
			typ = 1 + typ%byte(msgTypeEnd-1)
		}
		data := []byte{typ}
		if wrap {
			data = append(data, `{"v":1,"ts":`+ts+`,"p":`...)
			data = append(append(data, body...), '}')
		} else {
			data = append(data, body...)
		}
		s := New()
		if err := s.Restore(bytes.NewReader(snap)); err != nil {
			t.Fatal(err)
		}
		before := s.Hash()
		res := s.Apply(s.Index()+1, data)
		if s.Index() != base.idx+1 {
			t.Fatalf("index %d after apply", s.Index())
		}
		if res.Err != nil {
			var ce *CommandError
			if !errors.As(res.Err, &ce) || ErrorCode(res.Err) == CodeInternal || ce.Type != MsgType(typ) {
				t.Fatalf("rejection %#v is not a typed CommandError", res.Err)
			}
			s.hash.Store(nil)
			if s.Hash() != before {
				t.Fatalf("rejected command (%v) changed the state", res.Err)
			}
			return
		}
		after := s.Hash()
		r := New()
		if err := r.Restore(bytes.NewReader(snapshotBytes(t, s))); err != nil {
			t.Fatalf("snapshot of the new state does not restore: %v", err)
		}
		r.hash.Store(nil)
		if r.Hash() != after {
			t.Fatal("snapshot round trip changed the hash")
		}
	})
}

// FuzzRestore feeds Restore arbitrary bytes: no panic, and a failure
// leaves the store as it was.
func FuzzRestore(f *testing.F) {
	h := richHarness(f)
	good := snapshotBytes(f, h.s)
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add(snapshotBytes(f, New()))
	h.ok(MsgRouteAuthPut, RouteAuthPut{Auth: RouteAuth{Prefix: "10.1.0.0/16", Origins: []string{"node-a"}, MaxLength: 16, ASN: 64500}})
	f.Add(snapshotBytes(f, h.s)) // format 5
	f.Add([]byte("KMFSM\x01\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s := New()
		before := s.Hash()
		if err := s.Restore(bytes.NewReader(data)); err != nil {
			if s.Hash() != before || s.Index() != 0 {
				t.Fatal("failed restore changed the store")
			}
			return
		}
		cached := s.Hash()
		s.hash.Store(nil)
		if s.Hash() != cached {
			t.Fatal("restored state re-encodes differently")
		}
	})
}
