package fsm

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

type applyCase struct {
	name  string
	setup func(h *harness) // optional, after seed
	typ   MsgType
	p     any
	raw   []byte // instead of typ/p
	err   error  // sentinel, nil for accepted
	check func(t *testing.T, h *harness)
}

// TestApplyCommands runs every command type on a seeded store, accepted and
// rejected. A rejected command must leave Hash() unchanged and still
// advance the index; an accepted one must change the hash.
func TestApplyCommands(t *testing.T) {
	later := t0.Add(48 * time.Hour)
	cert := func(issuer, serial, node string) Issued {
		return Issued{Issuer: issuer, Serial: serial, NodeID: node, NotAfter: later, Cert: der(serial)}
	}
	newToken := func(id, secret string) JoinToken {
		return JoinToken{ID: id, Hash: hashOf(secret), Kind: TokenKindNode, Uses: 2, Expiry: t0.Add(time.Hour)}
	}
	pendingReg := func(id, node string) Registration {
		return Registration{ID: id, NodeID: node, Network: testNetwork, Principal: PrincipalNode, CSR: der("csr")}
	}
	key := json.RawMessage(`{"kty":"OKP","crv":"Ed25519","x":"AA"}`)

	cases := []applyCase{
		// servers
		{name: "server put new", typ: MsgServerPut, p: ServerPut{Server: Server{Name: "root-3", RaftAddr: "r3:7000", APIAddr: "r3:8443", Status: ServerJoining}},
			check: func(t *testing.T, h *harness) {
				s, ok := h.s.Server("root-3")
				if !ok || s.CreateIndex != h.idx || s.ModifyIndex != h.idx {
					t.Fatalf("server %+v ok=%v, want indexes %d", s, ok, h.idx)
				}
			}},
		{name: "server put update keeps create index", typ: MsgServerPut, p: ServerPut{Server: Server{Name: "root-1", RaftAddr: "r1:7001", APIAddr: "r1:8443", Status: ServerRemoved}},
			check: func(t *testing.T, h *harness) {
				s, _ := h.s.Server("root-1")
				if s.CreateIndex >= s.ModifyIndex || s.ModifyIndex != h.idx || s.RaftAddr != "r1:7001" {
					t.Fatalf("server %+v", s)
				}
			}},
		{name: "server put empty name", typ: MsgServerPut, p: ServerPut{Server: Server{RaftAddr: "a:1", APIAddr: "a:2", Status: ServerVoter}}, err: ErrInvalid},
		{name: "server put bad status", typ: MsgServerPut, p: ServerPut{Server: Server{Name: "x", RaftAddr: "a:1", APIAddr: "a:2", Status: "leader"}}, err: ErrInvalid},
		{name: "server put address with space", typ: MsgServerPut, p: ServerPut{Server: Server{Name: "x", RaftAddr: "a :1", APIAddr: "a:2", Status: ServerVoter}}, err: ErrInvalid},
		{name: "server remove", typ: MsgServerRemove, p: ServerRemove{Name: "root-2"},
			check: func(t *testing.T, h *harness) {
				if _, ok := h.s.Server("root-2"); ok {
					t.Fatal("root-2 still there")
				}
			}},
		{name: "server remove unknown", typ: MsgServerRemove, p: ServerRemove{Name: "nope"}, err: ErrNotFound},

		// CA
		{name: "genesis on a state that is not empty", typ: MsgGenesis, p: Genesis{CA: CA{Network: "other.example.net", Active: der("r2"), SealedKey: []byte("k")}}, err: ErrExists,
			check: func(t *testing.T, h *harness) {
				if n := h.s.Network(); n != testNetwork {
					t.Fatalf("Network() = %q", n)
				}
				if _, ok := h.s.CA("other.example.net"); ok {
					t.Fatal("a refused genesis left a CA")
				}
			}},
		{name: "genesis bad network", typ: MsgGenesis, p: Genesis{CA: CA{Network: "Main_Net", Active: der("r"), SealedKey: []byte("k")}}, err: ErrInvalid},
		{name: "genesis no active", typ: MsgGenesis, p: Genesis{CA: CA{Network: "n.example", SealedKey: []byte("k")}}, err: ErrInvalid},
		{name: "genesis active not DER", typ: MsgGenesis, p: Genesis{CA: CA{Network: "n.example", Active: []byte("PEM?"), SealedKey: []byte("k")}}, err: ErrInvalid},
		{name: "genesis no sealed key", typ: MsgGenesis, p: Genesis{CA: CA{Network: "n.example", Active: der("r")}}, err: ErrInvalid},
		{name: "ca update", typ: MsgCAUpdate, p: CAUpdate{CA: CA{Network: testNetwork, Active: der("root"), Prepared: [][]byte{der("next")}, SealedKey: []byte("sealed")}, ExpectModifyIndex: 1},
			check: func(t *testing.T, h *harness) {
				ca, _ := h.s.CA(testNetwork)
				if len(ca.Prepared) != 1 || ca.CreateIndex != 1 || ca.ModifyIndex != h.idx {
					t.Fatalf("ca %+v", ca)
				}
			}},
		{name: "ca update gossip keys primary not first", typ: MsgCAUpdate, p: CAUpdate{CA: CA{Network: testNetwork, Active: der("root"), SealedKey: []byte("s"),
			GossipKeys: []GossipKey{{ID: "a", Sealed: []byte("x"), State: GossipKeyRetiring}, {ID: "b", Sealed: []byte("y"), State: GossipKeyPrimary}}}, ExpectModifyIndex: 1}, err: ErrInvalid},
		{name: "ca update gossip keys duplicate id", typ: MsgCAUpdate, p: CAUpdate{CA: CA{Network: testNetwork, Active: der("root"), SealedKey: []byte("s"),
			GossipKeys: []GossipKey{{ID: "a", Sealed: []byte("x"), State: GossipKeyPrimary}, {ID: "a", Sealed: []byte("y"), State: GossipKeyRetiring}}}, ExpectModifyIndex: 1}, err: ErrInvalid},
		{name: "ca update gossip key unsealed", typ: MsgCAUpdate, p: CAUpdate{CA: CA{Network: testNetwork, Active: der("root"), SealedKey: []byte("s"),
			GossipKeys: []GossipKey{{ID: "a", State: GossipKeyPrimary}}}, ExpectModifyIndex: 1}, err: ErrInvalid},
		{name: "ca update two gossip keys installed", typ: MsgCAUpdate, p: CAUpdate{CA: CA{Network: testNetwork, Active: der("root"), SealedKey: []byte("s"),
			GossipKeys: []GossipKey{{ID: "a", Sealed: []byte("x"), State: GossipKeyPrimary}, {ID: "b", Sealed: []byte("x"), State: GossipKeyInstalled}, {ID: "c", Sealed: []byte("x"), State: GossipKeyInstalled}}}, ExpectModifyIndex: 1}, err: ErrInvalid},
		{name: "ca update gossip key state unknown", typ: MsgCAUpdate, p: CAUpdate{CA: CA{Network: testNetwork, Active: der("root"), SealedKey: []byte("s"),
			GossipKeys: []GossipKey{{ID: "a", Sealed: []byte("x"), State: GossipKeyPrimary}, {ID: "b", Sealed: []byte("x"), State: "spare"}}}, ExpectModifyIndex: 1}, err: ErrInvalid},
		{name: "ca update too many gossip keys", typ: MsgCAUpdate, p: CAUpdate{CA: CA{Network: testNetwork, Active: der("root"), SealedKey: []byte("s"),
			GossipKeys: []GossipKey{{ID: "a", Sealed: []byte("x"), State: GossipKeyPrimary}, {ID: "b", Sealed: []byte("x"), State: GossipKeyRetiring}, {ID: "c", Sealed: []byte("x"), State: GossipKeyRetiring}, {ID: "d", Sealed: []byte("x"), State: GossipKeyRetiring}, {ID: "e", Sealed: []byte("x"), State: GossipKeyRetiring}}}, ExpectModifyIndex: 1}, err: ErrInvalid},
		{name: "ca update sets the AS number", typ: MsgCAUpdate, p: CAUpdate{CA: CA{Network: testNetwork, Active: der("root"), SealedKey: []byte("sealed"), ASN: 64500}, ExpectModifyIndex: 1},
			check: func(t *testing.T, h *harness) {
				if ca, _ := h.s.CA(testNetwork); ca.ASN != 64500 {
					t.Fatalf("ca.asn %d", ca.ASN)
				}
			}},
		{name: "ca update AS_TRANS", typ: MsgCAUpdate, p: CAUpdate{CA: CA{Network: testNetwork, Active: der("root"), SealedKey: []byte("sealed"), ASN: 23456}, ExpectModifyIndex: 1}, err: ErrInvalid},
		{name: "ca update AS 65535", typ: MsgCAUpdate, p: CAUpdate{CA: CA{Network: testNetwork, Active: der("root"), SealedKey: []byte("sealed"), ASN: 65535}, ExpectModifyIndex: 1}, err: ErrInvalid},
		{name: "ca update AS 4294967295", typ: MsgCAUpdate, p: CAUpdate{CA: CA{Network: testNetwork, Active: der("root"), SealedKey: []byte("sealed"), ASN: 4294967295}, ExpectModifyIndex: 1}, err: ErrInvalid},
		{name: "ca update AS over 32 bits", raw: rawCommand(MsgCAUpdate, 1, t0.Add(time.Hour), map[string]any{"ca": map[string]any{"network": testNetwork, "active": der("root"), "sealed_key": []byte("sealed"), "asn": uint64(1) << 32}, "expect_modify_index": 1}), err: ErrInvalid},
		{name: "ca update stale", typ: MsgCAUpdate, p: CAUpdate{CA: CA{Network: testNetwork, Active: der("root"), SealedKey: []byte("s")}, ExpectModifyIndex: 7}, err: ErrConflict},
		{name: "ca update unknown network", typ: MsgCAUpdate, p: CAUpdate{CA: CA{Network: "x.example", Active: der("root"), SealedKey: []byte("s")}, ExpectModifyIndex: 1}, err: ErrNotFound},

		// issuers
		{name: "issuer put", typ: MsgIssuerPut, p: IssuerPut{Issuer: Issuer{ID: "root-3", Network: testNetwork, Cert: der("i3"), Status: IssuerActive}}},
		{name: "issuer put no CA", typ: MsgIssuerPut, p: IssuerPut{Issuer: Issuer{ID: "root-3", Network: "x.example", Cert: der("i3"), Status: IssuerActive}}, err: ErrNotFound},
		{name: "issuer put bad status", typ: MsgIssuerPut, p: IssuerPut{Issuer: Issuer{ID: "root-3", Network: testNetwork, Cert: der("i3"), Status: "paused"}}, err: ErrInvalid},
		{name: "issuer reactivate revoked",
			setup: func(h *harness) {
				h.ok(MsgIssuerPut, IssuerPut{Issuer: Issuer{ID: "root-2", Network: testNetwork, Cert: der("root-2"), Status: IssuerRevoked}})
			},
			typ: MsgIssuerPut, p: IssuerPut{Issuer: Issuer{ID: "root-2", Network: testNetwork, Cert: der("root-2"), Status: IssuerActive}}, err: ErrConflict},

		// join tokens
		{name: "token create", typ: MsgJoinTokenCreate, p: JoinTokenCreate{Token: newToken("t2", "s2")},
			check: func(t *testing.T, h *harness) {
				tok, ok := h.s.JoinTokenByID("t2")
				if !ok || tok.Hash != hashOf("s2") || tok.Used != 0 {
					t.Fatalf("token %+v ok=%v", tok, ok)
				}
			}},
		{name: "token create same hash", typ: MsgJoinTokenCreate, p: JoinTokenCreate{Token: newToken("t2", "secret-1")}, err: ErrExists},
		{name: "token create same id", typ: MsgJoinTokenCreate, p: JoinTokenCreate{Token: newToken("tok1", "s2")}, err: ErrExists},
		{name: "token create expired", typ: MsgJoinTokenCreate, p: JoinTokenCreate{Token: JoinToken{ID: "t2", Hash: hashOf("s2"), Kind: TokenKindNode, Uses: 1, Expiry: t0}}, err: ErrInvalid},
		{name: "token create zero uses", typ: MsgJoinTokenCreate, p: JoinTokenCreate{Token: JoinToken{ID: "t2", Hash: hashOf("s2"), Kind: TokenKindNode, Expiry: later}}, err: ErrInvalid},
		{name: "token create already used", typ: MsgJoinTokenCreate, p: JoinTokenCreate{Token: JoinToken{ID: "t2", Hash: hashOf("s2"), Kind: TokenKindNode, Uses: 2, Used: 1, Expiry: later}}, err: ErrInvalid},
		{name: "token create uppercase hash", typ: MsgJoinTokenCreate, p: JoinTokenCreate{Token: JoinToken{ID: "t2", Hash: strings.ToUpper(hashOf("s2")), Kind: TokenKindNode, Uses: 1, Expiry: later}}, err: ErrInvalid},
		{name: "token create bad kind", typ: MsgJoinTokenCreate, p: JoinTokenCreate{Token: JoinToken{ID: "t2", Hash: hashOf("s2"), Kind: "admin", Uses: 1, Expiry: later}}, err: ErrInvalid},
		{name: "token create bad principal", typ: MsgJoinTokenCreate, p: JoinTokenCreate{Token: JoinToken{ID: "t2", Hash: hashOf("s2"), Kind: TokenKindNode, Principal: "root", Uses: 1, Expiry: later}}, err: ErrInvalid},
		{name: "token consume", typ: MsgJoinTokenConsume, p: JoinTokenConsume{Hash: hashOf("secret-1"), Kind: TokenKindNode, NodeID: "node-z"},
			check: func(t *testing.T, h *harness) {
				if tok, _ := h.s.JoinToken(hashOf("secret-1")); tok.Used != 2 {
					t.Fatalf("used %d, want 2", tok.Used)
				}
			}},
		{name: "token consume unknown", typ: MsgJoinTokenConsume, p: JoinTokenConsume{Hash: hashOf("nope"), Kind: TokenKindNode}, err: ErrTokenNotFound},
		{name: "token consume bad hash", typ: MsgJoinTokenConsume, p: JoinTokenConsume{Hash: "abc", Kind: TokenKindNode}, err: ErrInvalid},
		{name: "token revoke", typ: MsgJoinTokenRevoke, p: JoinTokenRevoke{ID: "tok1"},
			check: func(t *testing.T, h *harness) {
				if tok, _ := h.s.JoinTokenByID("tok1"); !tok.Revoked {
					t.Fatal("not revoked")
				}
			}},
		{name: "token revoke unknown", typ: MsgJoinTokenRevoke, p: JoinTokenRevoke{ID: "nope"}, err: ErrNotFound},
		{name: "token revoke twice", setup: func(h *harness) { h.ok(MsgJoinTokenRevoke, JoinTokenRevoke{ID: "tok1"}) },
			typ: MsgJoinTokenRevoke, p: JoinTokenRevoke{ID: "tok1"}, err: ErrExists},

		// revocations
		{name: "revoke cert", typ: MsgRevoke, p: Revoke{Revocation: Revocation{Kind: RevocationCert, ID: "a1", Reason: "keyCompromise", Time: t0.Add(-time.Hour), PruneAfter: later}},
			check: func(t *testing.T, h *harness) {
				r, ok := h.s.Revoked(RevocationCert, "a1")
				if !ok || !r.Time.Equal(h.now) || !r.PruneAfter.Equal(later) || r.Reason != "keyCompromise" || r.CreateIndex != h.idx {
					t.Fatalf("revocation %+v ok=%v (now %v)", r, ok, h.now)
				}
			}},
		{name: "revoke node marks node", typ: MsgRevoke, p: Revoke{Revocation: Revocation{Kind: RevocationNode, ID: "node-a"}},
			check: func(t *testing.T, h *harness) {
				if n, _ := h.s.Node("node-a"); n.Status != NodeRevoked {
					t.Fatalf("node %+v", n)
				}
			}},
		{name: "revoke twice", setup: func(h *harness) {
			h.ok(MsgRevoke, Revoke{Revocation: Revocation{Kind: RevocationToken, ID: "jti-1"}})
		}, typ: MsgRevoke, p: Revoke{Revocation: Revocation{Kind: RevocationToken, ID: "jti-1", Reason: "again"}}, err: ErrExists},
		{name: "revoke same id other kind", setup: func(h *harness) {
			h.ok(MsgRevoke, Revoke{Revocation: Revocation{Kind: RevocationToken, ID: "x1"}})
		}, typ: MsgRevoke, p: Revoke{Revocation: Revocation{Kind: RevocationKey, ID: "x1"}}},
		{name: "revoke bad kind", typ: MsgRevoke, p: Revoke{Revocation: Revocation{Kind: "user", ID: "x"}}, err: ErrInvalid},
		{name: "revoke cert uppercase serial", typ: MsgRevoke, p: Revoke{Revocation: Revocation{Kind: RevocationCert, ID: "A1"}}, err: ErrInvalid},
		{name: "revoke cert leading zero", typ: MsgRevoke, p: Revoke{Revocation: Revocation{Kind: RevocationCert, ID: "0a1"}}, err: ErrInvalid},
		{name: "revoke empty id", typ: MsgRevoke, p: Revoke{Revocation: Revocation{Kind: RevocationKey}}, err: ErrInvalid},
		{name: "revoke reason with control char", typ: MsgRevoke, p: Revoke{Revocation: Revocation{Kind: RevocationKey, ID: "k", Reason: "a\x00b"}}, err: ErrInvalid},
		{name: "revoke prune after year 3000", typ: MsgRevoke, p: Revoke{Revocation: Revocation{Kind: RevocationKey, ID: "k", PruneAfter: time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)}}, err: ErrInvalid},
		{name: "prune", setup: func(h *harness) {
			h.ok(MsgRevoke, Revoke{Revocation: Revocation{Kind: RevocationToken, ID: "old", PruneAfter: h.now.Add(time.Second)}})
			h.now = h.now.Add(time.Minute)
		}, typ: MsgPruneRevocations, p: PruneRevocations{},
			check: func(t *testing.T, h *harness) {
				if _, ok := h.s.Revoked(RevocationToken, "old"); ok {
					t.Fatal("not pruned")
				}
			}},
		{name: "prune issuance drops expired certificates and their registrations", setup: func(h *harness) {
			h.now = t0.Add(25 * time.Hour)
		}, typ: MsgPruneRevocations, p: PruneRevocations{Issuance: true},
			check: func(t *testing.T, h *harness) {
				if _, ok := h.s.Issued("root-1", "a1"); ok {
					t.Fatal("expired certificate kept")
				}
				if _, ok := h.s.Registration("reg-a"); ok {
					t.Fatal("approved registration of an expired certificate kept")
				}
				if _, ok := h.s.Registration("reg-p"); !ok {
					t.Fatal("a day-old pending registration pruned")
				}
				if n, ok := h.s.Node("node-a"); !ok || n.CertSerial != "a1" {
					t.Fatalf("node record %+v ok=%v", n, ok)
				}
			}},
		{name: "prune issuance drops registrations a week unanswered or denied", setup: func(h *harness) {
			h.ok(MsgRegistrationCreate, RegistrationCreate{Registration: pendingReg("reg-d", "node-d")})
			h.ok(MsgRegistrationDeny, RegistrationDeny{ID: "reg-d", Reason: "unknown device"})
			h.ok(MsgRegistrationCreate, RegistrationCreate{Registration: pendingReg("reg-b", "node-b"), TokenHash: hashOf("secret-bound"),
				Cert: &Issued{Issuer: "root-2", Serial: "b1", NodeID: "node-b", NotAfter: t0.Add(time.Hour), Cert: der("b1")}})
			h.now = t0.Add(RegistrationRetention + time.Minute)
		}, typ: MsgPruneRevocations, p: PruneRevocations{Issuance: true},
			check: func(t *testing.T, h *harness) {
				for _, id := range []string{"reg-p", "reg-d"} {
					if _, ok := h.s.Registration(id); ok {
						t.Fatalf("registration %s kept past the retention", id)
					}
				}
				if _, ok := h.s.Issued("root-2", "b1"); ok {
					t.Fatal("expired certificate b1 kept")
				}
			}},
		{name: "prune without issuance keeps expired certificates", setup: func(h *harness) {
			h.now = t0.Add(RegistrationRetention + time.Minute)
		}, typ: MsgPruneRevocations, p: PruneRevocations{},
			check: func(t *testing.T, h *harness) {
				if _, ok := h.s.Issued("root-1", "a1"); !ok {
					t.Fatal("a command of an older proposer pruned issued certificates")
				}
				if _, ok := h.s.Registration("reg-p"); !ok {
					t.Fatal("a command of an older proposer pruned registrations")
				}
			}},

		// trust anchors
		{name: "anchor put federated", typ: MsgTrustAnchorPut, p: TrustAnchorPut{Anchor: TrustAnchor{Network: "fed.example.org", Roots: [][]byte{der("fr")}, Accept: []string{}}},
			check: func(t *testing.T, h *harness) {
				a, ok := h.s.TrustAnchor("fed.example.org")
				if !ok || a.Accept != nil {
					t.Fatalf("anchor %+v ok=%v (empty accept must read as nil)", a, ok)
				}
			}},
		{name: "anchor put no roots", typ: MsgTrustAnchorPut, p: TrustAnchorPut{Anchor: TrustAnchor{Network: "fed.example.org"}}, err: ErrInvalid},
		{name: "anchor put duplicate accept", typ: MsgTrustAnchorPut, p: TrustAnchorPut{Anchor: TrustAnchor{Network: "fed.example.org", Roots: [][]byte{der("fr")}, Accept: []string{"a.example", "a.example"}}}, err: ErrInvalid},
		{name: "anchor put bad accept", typ: MsgTrustAnchorPut, p: TrustAnchorPut{Anchor: TrustAnchor{Network: "fed.example.org", Roots: [][]byte{der("fr")}, Accept: []string{"-a.example"}}}, err: ErrInvalid},
		{name: "anchor put federated keys", typ: MsgTrustAnchorPut, p: TrustAnchorPut{Anchor: TrustAnchor{Network: "fed.example.org", Roots: [][]byte{der("fr")},
			Endpoints: []string{"r1.fed.example.org:8443"}, Keys: []FederatedKey{{KID: "k1", Node: "f-1", Key: []byte(`{"kid":"k1"}`)}, {KID: "k2", Node: "f-2", Key: []byte(`{"kid":"k2"}`)}}}},
			check: func(t *testing.T, h *harness) {
				network, k, ok := h.s.FederatedKey("k2")
				if !ok || network != "fed.example.org" || k.Node != "f-2" {
					t.Fatalf("federated key k2: %q %+v %v", network, k, ok)
				}
				if _, _, ok := h.s.FederatedKey("k3"); ok {
					t.Fatal("an unknown kid found")
				}
			}},
		{name: "anchor put federated keys unsorted", typ: MsgTrustAnchorPut, p: TrustAnchorPut{Anchor: TrustAnchor{Network: "fed.example.org", Roots: [][]byte{der("fr")},
			Keys: []FederatedKey{{KID: "k2", Node: "f-2", Key: []byte("{}")}, {KID: "k1", Node: "f-1", Key: []byte("{}")}}}}, err: ErrInvalid},
		{name: "anchor put federated keys repeated", typ: MsgTrustAnchorPut, p: TrustAnchorPut{Anchor: TrustAnchor{Network: "fed.example.org", Roots: [][]byte{der("fr")},
			Keys: []FederatedKey{{KID: "k1", Node: "f-1", Key: []byte("{}")}, {KID: "k1", Node: "f-1", Key: []byte("{}")}}}}, err: ErrInvalid},
		{name: "anchor put federated key without node", typ: MsgTrustAnchorPut, p: TrustAnchorPut{Anchor: TrustAnchor{Network: "fed.example.org", Roots: [][]byte{der("fr")},
			Keys: []FederatedKey{{KID: "k1", Key: []byte("{}")}}}}, err: ErrInvalid},
		{name: "anchor put federated key empty", typ: MsgTrustAnchorPut, p: TrustAnchorPut{Anchor: TrustAnchor{Network: "fed.example.org", Roots: [][]byte{der("fr")},
			Keys: []FederatedKey{{KID: "k1", Node: "f-1"}}}}, err: ErrInvalid},
		{name: "anchor put federated key too long", typ: MsgTrustAnchorPut, p: TrustAnchorPut{Anchor: TrustAnchor{Network: "fed.example.org", Roots: [][]byte{der("fr")},
			Keys: []FederatedKey{{KID: "k1", Node: "f-1", Key: make([]byte, MaxJWKLen+1)}}}}, err: ErrInvalid},
		{name: "anchor put too many federated keys", typ: MsgTrustAnchorPut, p: TrustAnchorPut{Anchor: TrustAnchor{Network: "fed.example.org", Roots: [][]byte{der("fr")},
			Keys: manyFederatedKeys(MaxFederatedKeys + 1)}}, err: ErrInvalid},
		{name: "anchor put too many endpoints", typ: MsgTrustAnchorPut, p: TrustAnchorPut{Anchor: TrustAnchor{Network: "fed.example.org", Roots: [][]byte{der("fr")},
			Endpoints: []string{"a:1", "b:1", "c:1", "d:1", "e:1", "f:1", "g:1", "h:1", "i:1"}}}, err: ErrInvalid},
		{name: "anchor put own with keys", typ: MsgTrustAnchorPut, p: TrustAnchorPut{Anchor: TrustAnchor{Network: testNetwork, Roots: [][]byte{der("root")},
			Keys: []FederatedKey{{KID: "k1", Node: "f-1", Key: []byte("{}")}}}}, err: ErrInvalid},
		{name: "anchor put own exclusive", typ: MsgTrustAnchorPut, p: TrustAnchorPut{Anchor: TrustAnchor{Network: testNetwork, Roots: [][]byte{der("root")},
			Accept: []string{testNetwork}, Exclusive: true}},
			check: func(t *testing.T, h *harness) {
				if a, _ := h.s.TrustAnchor(testNetwork); !a.Exclusive {
					t.Fatalf("own anchor %+v", a)
				}
			}},
		{name: "anchor put federated exclusive", typ: MsgTrustAnchorPut, p: TrustAnchorPut{Anchor: TrustAnchor{Network: "fed.example.org", Roots: [][]byte{der("fr")},
			Exclusive: true}}, err: ErrInvalid},
		{name: "anchor delete own", typ: MsgTrustAnchorDelete, p: TrustAnchorDelete{Network: testNetwork}, err: ErrConflict},
		{name: "anchor delete unknown", typ: MsgTrustAnchorDelete, p: TrustAnchorDelete{Network: "fed.example.org"}, err: ErrNotFound},
		{name: "anchor delete", setup: func(h *harness) {
			h.ok(MsgTrustAnchorPut, TrustAnchorPut{Anchor: TrustAnchor{Network: "fed.example.org", Roots: [][]byte{der("fr")}}})
		}, typ: MsgTrustAnchorDelete, p: TrustAnchorDelete{Network: "fed.example.org"}},

		// exclusive membership (the seed puts the own anchor at index 6 and ends at 12)
		{name: "exclusive set", typ: MsgExclusiveSet, p: ExclusiveSet{Network: testNetwork, Exclusive: true, ExpectModifyIndex: 6},
			check: func(t *testing.T, h *harness) {
				a, _ := h.s.TrustAnchor(testNetwork)
				if !a.Exclusive || a.ModifyIndex != h.idx || a.CreateIndex != 6 || len(a.Roots) != 1 || !slices.Equal(a.Accept, []string{testNetwork}) {
					t.Fatalf("own anchor %+v", a)
				}
			}},
		{name: "exclusive cleared", setup: func(h *harness) {
			h.ok(MsgExclusiveSet, ExclusiveSet{Network: testNetwork, Exclusive: true, ExpectModifyIndex: 6})
		}, typ: MsgExclusiveSet, p: ExclusiveSet{Network: testNetwork, ExpectModifyIndex: 13},
			check: func(t *testing.T, h *harness) {
				if a, _ := h.s.TrustAnchor(testNetwork); a.Exclusive {
					t.Fatalf("own anchor %+v", a)
				}
			}},
		{name: "exclusive set stale", typ: MsgExclusiveSet, p: ExclusiveSet{Network: testNetwork, Exclusive: true, ExpectModifyIndex: 5}, err: ErrConflict},
		{name: "exclusive set on a federated network", setup: func(h *harness) {
			h.ok(MsgTrustAnchorPut, TrustAnchorPut{Anchor: TrustAnchor{Network: "fed.example.org", Roots: [][]byte{der("fr")}}})
		}, typ: MsgExclusiveSet, p: ExclusiveSet{Network: "fed.example.org", Exclusive: true, ExpectModifyIndex: 13}, err: ErrInvalid},
		{name: "exclusive set bad network", typ: MsgExclusiveSet, p: ExclusiveSet{Network: "Main_Net", Exclusive: true, ExpectModifyIndex: 6}, err: ErrInvalid},

		// nodes and certificates
		{name: "node cert renew of a revoked node", setup: func(h *harness) {
			h.ok(MsgRevoke, Revoke{Revocation: Revocation{Kind: RevocationNode, ID: "node-a"}})
		}, typ: MsgNodeCertRenew, p: NodeCertRenew{Cert: cert("root-2", "a2", "node-a")}, err: ErrConflict},
		{name: "node cert renew", typ: MsgNodeCertRenew, p: NodeCertRenew{Cert: cert("root-2", "a2", "node-a")},
			check: func(t *testing.T, h *harness) {
				n, _ := h.s.Node("node-a")
				if n.CertSerial != "a2" || n.PrevSerial != "a1" || !n.CertExpiry.Equal(later) {
					t.Fatalf("node %+v", n)
				}
			}},
		{name: "node cert renew presenting the current certificate", typ: MsgNodeCertRenew, p: NodeCertRenew{Cert: cert("root-2", "a2", "node-a"), Presented: "a1"},
			check: func(t *testing.T, h *harness) {
				if n, _ := h.s.Node("node-a"); n.CertSerial != "a2" || n.PrevSerial != "a1" {
					t.Fatalf("node %+v", n)
				}
			}},
		{name: "node cert renew presenting the previous certificate keeps it previous", setup: func(h *harness) {
			h.ok(MsgNodeCertRenew, NodeCertRenew{Cert: cert("root-2", "a2", "node-a"), Presented: "a1"})
		}, typ: MsgNodeCertRenew, p: NodeCertRenew{Cert: cert("root-2", "a3", "node-a"), Presented: "a1"},
			check: func(t *testing.T, h *harness) {
				if n, _ := h.s.Node("node-a"); n.CertSerial != "a3" || n.PrevSerial != "a1" {
					t.Fatalf("node %+v", n)
				}
			}},
		{name: "node cert renew presenting an older certificate", setup: func(h *harness) {
			h.ok(MsgNodeCertRenew, NodeCertRenew{Cert: cert("root-2", "a2", "node-a"), Presented: "a1"})
			h.ok(MsgNodeCertRenew, NodeCertRenew{Cert: cert("root-2", "a3", "node-a"), Presented: "a2"})
		}, typ: MsgNodeCertRenew, p: NodeCertRenew{Cert: cert("root-2", "a4", "node-a"), Presented: "a1"}, err: ErrConflict},
		{name: "node cert renew presenting a serial that is not hex", typ: MsgNodeCertRenew, p: NodeCertRenew{Cert: cert("root-2", "a2", "node-a"), Presented: "A1"}, err: ErrInvalid},
		{name: "node cert renew with a new key rotates", typ: MsgNodeCertRenew, p: NodeCertRenew{Cert: cert("root-2", "a2", "node-a"),
			Key: &JWK{KID: "kid-a2", Key: key, Node: "node-a", State: JWKActive, NotAfter: later}},
			check: func(t *testing.T, h *harness) {
				cur, _ := h.s.JWK("kid-a2")
				old, _ := h.s.JWK("kid-a")
				if cur.State != JWKActive || old.State != JWKRetiring || !old.RetiringSince.Equal(h.now) {
					t.Fatalf("new key %+v, old key %+v", cur, old)
				}
			}},
		{name: "node cert renew with the same key keeps it active", typ: MsgNodeCertRenew, p: NodeCertRenew{Cert: cert("root-2", "a2", "node-a"),
			Key: &JWK{KID: "kid-a", Key: key, Node: "node-a", State: JWKActive, NotAfter: later}},
			check: func(t *testing.T, h *harness) {
				if k, _ := h.s.JWK("kid-a"); k.State != JWKActive || !k.RetiringSince.IsZero() {
					t.Fatalf("key %+v", k)
				}
			}},
		{name: "node cert renew key of another node", typ: MsgNodeCertRenew, p: NodeCertRenew{Cert: cert("root-2", "a2", "node-a"),
			Key: &JWK{KID: "kid-x", Key: key, Node: "node-b", State: JWKActive}}, err: ErrInvalid},
		{name: "node cert renew with a revoked kid changes nothing", setup: func(h *harness) {
			h.ok(MsgRevoke, Revoke{Revocation: Revocation{Kind: RevocationKey, ID: "kid-bad"}})
		}, typ: MsgNodeCertRenew, p: NodeCertRenew{Cert: cert("root-2", "a2", "node-a"),
			Key: &JWK{KID: "kid-bad", Key: key, Node: "node-a", State: JWKActive}}, err: ErrConflict},
		{name: "node cert renew with a staged key", typ: MsgNodeCertRenew, p: NodeCertRenew{Cert: cert("root-2", "a2", "node-a"),
			Key: &JWK{KID: "kid-a2", Key: key, Node: "node-a", State: JWKStaged}}, err: ErrInvalid},
		{name: "prune drops keys past their not-after", setup: func(h *harness) {
			h.ok(MsgJWKPut, JWKPut{Key: JWK{KID: "kid-a", Key: json.RawMessage(`{"kty":"EC","crv":"P-256","x":"AA","y":"BB"}`), Node: "node-a",
				State: JWKRetiring, NotAfter: h.now.Add(time.Second)}})
			h.now = h.now.Add(time.Minute)
		}, typ: MsgPruneRevocations, p: PruneRevocations{},
			check: func(t *testing.T, h *harness) {
				if _, ok := h.s.JWK("kid-a"); ok {
					t.Fatal("expired key not pruned")
				}
			}},
		{name: "node cert renew unknown node", typ: MsgNodeCertRenew, p: NodeCertRenew{Cert: cert("root-2", "a2", "node-x")}, err: ErrNotFound},
		{name: "node cert renew repeated serial", typ: MsgNodeCertRenew, p: NodeCertRenew{Cert: cert("root-1", "a1", "node-a")}, err: ErrExists},
		{name: "node cert renew revoked node", setup: func(h *harness) {
			h.ok(MsgRevoke, Revoke{Revocation: Revocation{Kind: RevocationNode, ID: "node-a"}})
		}, typ: MsgNodeCertRenew, p: NodeCertRenew{Cert: cert("root-1", "a3", "node-a")}, err: ErrConflict},

		// JWKS
		{name: "jwk put second key", typ: MsgJWKPut, p: JWKPut{Key: JWK{KID: "kid-a2", Key: json.RawMessage(`{ "kty" : "OKP", "crv":"Ed25519", "x":"AA" }`), Node: "node-a", State: JWKStaged}},
			check: func(t *testing.T, h *harness) {
				k, _ := h.s.JWK("kid-a2")
				if string(k.Key) != `{"kty":"OKP","crv":"Ed25519","x":"AA"}` {
					t.Fatalf("key not compacted: %s", k.Key)
				}
			}},
		{name: "jwk put server key", typ: MsgJWKPut, p: JWKPut{Key: JWK{KID: "kid-r1", Key: key, Node: "root-1", State: JWKActive}}},
		{name: "jwk put private key", typ: MsgJWKPut, p: JWKPut{Key: JWK{KID: "kid-x", Key: json.RawMessage(`{"kty":"OKP","crv":"Ed25519","x":"AA","d":"secret"}`), Node: "node-a", State: JWKActive}}, err: ErrInvalid},
		{name: "jwk put symmetric key", typ: MsgJWKPut, p: JWKPut{Key: JWK{KID: "kid-x", Key: json.RawMessage(`{"kty":"oct","k":"secret"}`), Node: "node-a", State: JWKActive}}, err: ErrInvalid},
		{name: "jwk put no kty", typ: MsgJWKPut, p: JWKPut{Key: JWK{KID: "kid-x", Key: json.RawMessage(`{"x":"AA"}`), Node: "node-a", State: JWKActive}}, err: ErrInvalid},
		{name: "jwk put unknown owner", typ: MsgJWKPut, p: JWKPut{Key: JWK{KID: "kid-x", Key: key, Node: "node-x", State: JWKActive}}, err: ErrNotFound},
		{name: "jwk put pending node is no owner", typ: MsgJWKPut, p: JWKPut{Key: JWK{KID: "kid-x", Key: key, Node: "node-p", State: JWKActive}}, err: ErrNotFound},
		{name: "jwk put kid of another owner", typ: MsgJWKPut, p: JWKPut{Key: JWK{KID: "kid-a", Key: key, Node: "root-1", State: JWKActive}}, err: ErrConflict},
		{name: "jwk put revoked kid", setup: func(h *harness) {
			h.ok(MsgRevoke, Revoke{Revocation: Revocation{Kind: RevocationKey, ID: "kid-z"}})
		}, typ: MsgJWKPut, p: JWKPut{Key: JWK{KID: "kid-z", Key: key, Node: "node-a", State: JWKActive}}, err: ErrConflict},
		{name: "jwk put revoked node", setup: func(h *harness) {
			h.ok(MsgRevoke, Revoke{Revocation: Revocation{Kind: RevocationNode, ID: "node-a"}})
		}, typ: MsgJWKPut, p: JWKPut{Key: JWK{KID: "kid-a3", Key: key, Node: "node-a", State: JWKActive}}, err: ErrConflict},

		// registrations
		{name: "registration pending", typ: MsgRegistrationCreate, p: RegistrationCreate{Registration: pendingReg("reg-q", "node-q")},
			check: func(t *testing.T, h *harness) {
				r, _ := h.s.Registration("reg-q")
				if r.Status != RegistrationPending || !r.Created.Equal(h.now) {
					t.Fatalf("registration %+v", r)
				}
				if _, ok := h.s.Node("node-q"); ok {
					t.Fatal("pending registration made a node")
				}
			}},
		{name: "registration status in payload ignored", typ: MsgRegistrationCreate, p: RegistrationCreate{Registration: func() Registration {
			r := pendingReg("reg-q", "node-q")
			r.Status, r.Serial = RegistrationApproved, "ff"
			return r
		}()}, check: func(t *testing.T, h *harness) {
			if r, _ := h.s.Registration("reg-q"); r.Status != RegistrationPending || r.Serial != "" {
				t.Fatalf("registration %+v", r)
			}
		}},
		{name: "registration dns names", typ: MsgRegistrationCreate, p: RegistrationCreate{Registration: func() Registration {
			r := pendingReg("reg-q", "node-q")
			r.DNSNames = []string{"node-q.mainnet.example.net", "web.mainnet.example.net"}
			return r
		}()}, check: func(t *testing.T, h *harness) {
			if r, _ := h.s.Registration("reg-q"); len(r.DNSNames) != 2 {
				t.Fatalf("registration %+v", r)
			}
		}},
		{name: "registration dns name outside the network", typ: MsgRegistrationCreate, p: RegistrationCreate{Registration: func() Registration {
			r := pendingReg("reg-q", "node-q")
			r.DNSNames = []string{"localhost"}
			return r
		}()}, err: ErrConflict},
		{name: "registration wildcard dns name", typ: MsgRegistrationCreate, p: RegistrationCreate{Registration: func() Registration {
			r := pendingReg("reg-q", "node-q")
			r.DNSNames = []string{"*.mainnet.example.net"}
			return r
		}()}, err: ErrConflict},
		{name: "registration dns name of another active node", typ: MsgRegistrationCreate, p: RegistrationCreate{Registration: func() Registration {
			r := pendingReg("reg-q", "node-q")
			r.DNSNames = []string{"node-a.mainnet.example.net"}
			return r
		}()}, err: ErrConflict},
		{name: "registration dns name of a root server", setup: func(h *harness) {
			h.ok(MsgServerPut, ServerPut{Server: Server{Name: "root-9", RaftAddr: "10.0.0.9:7000", APIAddr: "r9.mainnet.example.net:8443", Status: ServerVoter}})
		}, typ: MsgRegistrationCreate, p: RegistrationCreate{Registration: func() Registration {
			r := pendingReg("reg-q", "node-q")
			r.DNSNames = []string{"r9.mainnet.example.net"}
			return r
		}()}, err: ErrConflict},
		{name: "registration dns name of a node whose certificate expired", setup: func(h *harness) {
			h.now = t0.Add(25 * time.Hour)
		}, typ: MsgRegistrationCreate, p: RegistrationCreate{Registration: func() Registration {
			r := pendingReg("reg-q", "node-q")
			r.DNSNames = []string{"node-a.mainnet.example.net"}
			return r
		}()}},
		{name: "registration dns name not allowed by the token", typ: MsgRegistrationCreate, p: RegistrationCreate{Registration: func() Registration {
			r := pendingReg("reg-q", "node-q")
			r.DNSNames = []string{"web.mainnet.example.net"}
			return r
		}(), TokenHash: hashOf("secret-1"), Cert: &Issued{Issuer: "root-2", Serial: "c1", NodeID: "node-q", NotAfter: later, Cert: der("c")}}, err: ErrTokenConstraint},
		{name: "registration dns name the token allows", setup: func(h *harness) {
			h.ok(MsgJoinTokenCreate, JoinTokenCreate{Token: JoinToken{ID: "tokdns", Hash: hashOf("secret-dns"), Kind: TokenKindNode, Principal: PrincipalNode,
				Uses: 1, Expiry: t0.Add(time.Hour), DNSNames: []string{"web.mainnet.example.net"}}})
		}, typ: MsgRegistrationCreate, p: RegistrationCreate{Registration: func() Registration {
			r := pendingReg("reg-q", "node-q")
			r.DNSNames = []string{"web.mainnet.example.net", "node-q.mainnet.example.net"}
			return r
		}(), TokenHash: hashOf("secret-dns"), Cert: &Issued{Issuer: "root-2", Serial: "c1", NodeID: "node-q", NotAfter: later, Cert: der("c")}},
			check: func(t *testing.T, h *harness) {
				if n, _ := h.s.Node("node-q"); len(n.DNSNames) != 2 {
					t.Fatalf("node %+v", n)
				}
				if id, ok := h.s.DNSNameHolder("web.mainnet.example.net"); !ok || id != "node-q" {
					t.Fatalf("holder of web: %q %v", id, ok)
				}
			}},
		{name: "token dns names outside the network", typ: MsgJoinTokenCreate, p: JoinTokenCreate{Token: JoinToken{ID: "tokdns", Hash: hashOf("secret-dns"),
			Kind: TokenKindNode, Principal: PrincipalNode, Uses: 1, Expiry: t0.Add(time.Hour), DNSNames: []string{"localhost"}}}, err: ErrInvalid},
		{name: "token dns names on a root token", typ: MsgJoinTokenCreate, p: JoinTokenCreate{Token: JoinToken{ID: "tokdns", Hash: hashOf("secret-dns"),
			Kind: TokenKindRoot, Uses: 1, Expiry: t0.Add(time.Hour), DNSNames: []string{"x.mainnet.example.net"}}}, err: ErrInvalid},
		{name: "registration upper-case node id", typ: MsgRegistrationCreate, p: RegistrationCreate{Registration: pendingReg("reg-q", "Node-Q")}, err: ErrInvalid},
		{name: "registration pending twice for one node id", typ: MsgRegistrationCreate, p: RegistrationCreate{Registration: pendingReg("reg-p2", "node-p")}, err: ErrConflict},
		{name: "registration pending again after a denial", setup: func(h *harness) {
			h.ok(MsgRegistrationDeny, RegistrationDeny{ID: "reg-p"})
		}, typ: MsgRegistrationCreate, p: RegistrationCreate{Registration: pendingReg("reg-p2", "node-p")}},
		{name: "registration over the pending limit", typ: MsgRegistrationCreate, p: RegistrationCreate{Registration: pendingReg("reg-q", "node-q"),
			Limits: &PendingLimits{Total: 1, PerSource: 10}}, err: ErrLimit},
		{name: "registration over the pending limit per source", setup: func(h *harness) {
			r := pendingReg("reg-s1", "node-s1")
			r.Source = "192.0.2.7"
			h.ok(MsgRegistrationCreate, RegistrationCreate{Registration: r})
		}, typ: MsgRegistrationCreate, p: RegistrationCreate{Registration: func() Registration {
			r := pendingReg("reg-s2", "node-s2")
			r.Source = "192.0.2.7"
			return r
		}(), Limits: &PendingLimits{Total: 100, PerSource: 1}}, err: ErrLimit},
		{name: "registration within the pending limits", typ: MsgRegistrationCreate, p: RegistrationCreate{Registration: func() Registration {
			r := pendingReg("reg-s2", "node-s2")
			r.Source = "192.0.2.7"
			return r
		}(), Limits: &PendingLimits{Total: 2, PerSource: 1}}},
		{name: "registration limits of zero", typ: MsgRegistrationCreate, p: RegistrationCreate{Registration: pendingReg("reg-q", "node-q"),
			Limits: &PendingLimits{}}, err: ErrInvalid},
		{name: "registration with a token without a principal gets NODE", typ: MsgRegistrationCreate, p: RegistrationCreate{Registration: pendingReg("reg-q", "node-b"),
			TokenHash: hashOf("secret-bound"), Cert: &Issued{Issuer: "root-2", Serial: "c1", NodeID: "node-b", NotAfter: later, Cert: der("c")}},
			check: func(t *testing.T, h *harness) {
				if n, _ := h.s.Node("node-b"); n.Principal != PrincipalNode {
					t.Fatalf("node %+v", n)
				}
			}},
		{name: "registration for ADMIN with a token without a principal", typ: MsgRegistrationCreate, p: RegistrationCreate{Registration: func() Registration {
			r := pendingReg("reg-q", "node-b")
			r.Principal = PrincipalAdmin
			return r
		}(), TokenHash: hashOf("secret-bound"), Cert: &Issued{Issuer: "root-2", Serial: "c1", NodeID: "node-b", NotAfter: later, Cert: der("c")}}, err: ErrTokenConstraint},
		{name: "registration of a node whose certificate is revoked", setup: func(h *harness) {
			h.ok(MsgRevoke, Revoke{Revocation: Revocation{Kind: RevocationCert, ID: "a1"}})
		}, typ: MsgRegistrationCreate, p: RegistrationCreate{Registration: pendingReg("reg-q", "node-a")}},
		{name: "registration of a node whose issuer is revoked", setup: func(h *harness) {
			h.ok(MsgIssuerPut, IssuerPut{Issuer: Issuer{ID: "root-1", Network: testNetwork, Cert: der("root-1"), Status: IssuerRevoked}})
		}, typ: MsgRegistrationCreate, p: RegistrationCreate{Registration: pendingReg("reg-q", "node-a")}},
		{name: "registration of a node whose key is revoked", setup: func(h *harness) {
			h.ok(MsgRevoke, Revoke{Revocation: Revocation{Kind: RevocationKey, ID: "kid-a"}})
		}, typ: MsgRegistrationCreate, p: RegistrationCreate{Registration: pendingReg("reg-q", "node-a")}},
		{name: "registration of an active node", typ: MsgRegistrationCreate, p: RegistrationCreate{Registration: pendingReg("reg-q", "node-a")}, err: ErrExists},
		{name: "revoke node with prune_after", typ: MsgRevoke, p: Revoke{Revocation: Revocation{Kind: RevocationNode, ID: "node-a", PruneAfter: later}}, err: ErrInvalid},
		{name: "registration approve with another principal", typ: MsgRegistrationApprove, p: RegistrationApprove{ID: "reg-p", Cert: cert("root-1", "b1", "node-p"), Principal: PrincipalUser},
			check: func(t *testing.T, h *harness) {
				r, _ := h.s.Registration("reg-p")
				n, _ := h.s.Node("node-p")
				if r.Principal != PrincipalUser || n.Principal != PrincipalUser {
					t.Fatalf("registration %+v node %+v", r, n)
				}
			}},
		{name: "registration bad dns name", typ: MsgRegistrationCreate, p: RegistrationCreate{Registration: func() Registration {
			r := pendingReg("reg-q", "node-q")
			r.DNSNames = []string{"node q.example"}
			return r
		}()}, err: ErrInvalid},
		{name: "registration duplicate dns name", typ: MsgRegistrationCreate, p: RegistrationCreate{Registration: func() Registration {
			r := pendingReg("reg-q", "node-q")
			r.DNSNames = []string{"a.example", "a.example"}
			return r
		}()}, err: ErrInvalid},
		{name: "registration duplicate id", typ: MsgRegistrationCreate, p: RegistrationCreate{Registration: pendingReg("reg-a", "node-q")}, err: ErrExists},
		{name: "registration unknown network", typ: MsgRegistrationCreate, p: RegistrationCreate{Registration: Registration{ID: "r", NodeID: "n", Network: "x.example", Principal: PrincipalNode, CSR: der("c")}}, err: ErrNotFound},
		{name: "registration no csr", typ: MsgRegistrationCreate, p: RegistrationCreate{Registration: Registration{ID: "r", NodeID: "n", Network: testNetwork, Principal: PrincipalNode}}, err: ErrInvalid},
		{name: "registration cert without token", typ: MsgRegistrationCreate, p: RegistrationCreate{Registration: pendingReg("reg-q", "node-q"), Cert: &Issued{Issuer: "root-1", Serial: "c1", NodeID: "node-q", NotAfter: later, Cert: der("c")}}, err: ErrInvalid},
		{name: "registration token without cert", typ: MsgRegistrationCreate, p: RegistrationCreate{Registration: pendingReg("reg-q", "node-q"), TokenHash: hashOf("secret-1")}, err: ErrInvalid},
		{name: "registration with token", typ: MsgRegistrationCreate, p: RegistrationCreate{Registration: pendingReg("reg-q", "node-q"), TokenHash: hashOf("secret-1"), Cert: &Issued{Issuer: "root-2", Serial: "c1", NodeID: "node-q", NotAfter: later, Cert: der("c")}},
			check: func(t *testing.T, h *harness) {
				r, _ := h.s.Registration("reg-q")
				n, _ := h.s.Node("node-q")
				tok, _ := h.s.JoinToken(hashOf("secret-1"))
				_, issued := h.s.Issued("root-2", "c1")
				if r.Status != RegistrationApproved || r.Serial != "c1" || r.Issuer != "root-2" || n.Status != NodeActive || n.CertSerial != "c1" || tok.Used != 2 || !issued {
					t.Fatalf("registration %+v node %+v token used %d issued %v", r, n, tok.Used, issued)
				}
			}},
		{name: "registration with token puts the key", typ: MsgRegistrationCreate, p: RegistrationCreate{Registration: pendingReg("reg-q", "node-q"), TokenHash: hashOf("secret-1"),
			Cert: &Issued{Issuer: "root-2", Serial: "c1", NodeID: "node-q", NotAfter: later, Cert: der("c")}, Key: &JWK{KID: "kid-q", Key: key, Node: "node-q", State: JWKActive, NotAfter: later}},
			check: func(t *testing.T, h *harness) {
				if k, ok := h.s.JWK("kid-q"); !ok || k.Node != "node-q" || k.State != JWKActive {
					t.Fatalf("key %+v ok=%v", k, ok)
				}
			}},
		{name: "registration with token and a kid of another node consumes nothing", typ: MsgRegistrationCreate, p: RegistrationCreate{Registration: pendingReg("reg-q", "node-q"), TokenHash: hashOf("secret-1"),
			Cert: &Issued{Issuer: "root-2", Serial: "c1", NodeID: "node-q", NotAfter: later, Cert: der("c")}, Key: &JWK{KID: "kid-a", Key: key, Node: "node-q", State: JWKActive}}, err: ErrConflict,
			check: func(t *testing.T, h *harness) {
				if tok, _ := h.s.JoinToken(hashOf("secret-1")); tok.Used != 1 {
					t.Fatalf("token used %d, want 1", tok.Used)
				}
			}},
		{name: "pending registration with a key", typ: MsgRegistrationCreate, p: RegistrationCreate{Registration: pendingReg("reg-q", "node-q"),
			Key: &JWK{KID: "kid-q", Key: key, Node: "node-q", State: JWKActive}}, err: ErrInvalid},
		{name: "registration token cert for other node", typ: MsgRegistrationCreate, p: RegistrationCreate{Registration: pendingReg("reg-q", "node-q"), TokenHash: hashOf("secret-1"), Cert: &Issued{Issuer: "root-2", Serial: "c1", NodeID: "node-z", NotAfter: later, Cert: der("c")}}, err: ErrInvalid},
		{name: "registration token principal mismatch", typ: MsgRegistrationCreate, p: RegistrationCreate{Registration: func() Registration {
			r := pendingReg("reg-q", "node-q")
			r.Principal = PrincipalAdmin
			return r
		}(), TokenHash: hashOf("secret-1"), Cert: &Issued{Issuer: "root-2", Serial: "c1", NodeID: "node-q", NotAfter: later, Cert: der("c")}}, err: ErrTokenConstraint},
		{name: "registration token bound to other node", typ: MsgRegistrationCreate, p: RegistrationCreate{Registration: pendingReg("reg-q", "node-q"), TokenHash: hashOf("secret-bound"), Cert: &Issued{Issuer: "root-2", Serial: "c1", NodeID: "node-q", NotAfter: later, Cert: der("c")}}, err: ErrTokenConstraint},
		{name: "registration root token", typ: MsgRegistrationCreate, p: RegistrationCreate{Registration: pendingReg("reg-q", "node-q"), TokenHash: hashOf("secret-root"), Cert: &Issued{Issuer: "root-2", Serial: "c1", NodeID: "node-q", NotAfter: later, Cert: der("c")}}, err: ErrTokenConstraint},
		{name: "registration repeated serial consumes nothing", typ: MsgRegistrationCreate, p: RegistrationCreate{Registration: pendingReg("reg-q", "node-q"), TokenHash: hashOf("secret-1"), Cert: &Issued{Issuer: "root-1", Serial: "a1", NodeID: "node-q", NotAfter: later, Cert: der("c")}}, err: ErrExists,
			check: func(t *testing.T, h *harness) {
				if tok, _ := h.s.JoinToken(hashOf("secret-1")); tok.Used != 1 {
					t.Fatalf("token used %d, want 1", tok.Used)
				}
			}},
		{name: "registration revoked node", setup: func(h *harness) {
			h.ok(MsgRevoke, Revoke{Revocation: Revocation{Kind: RevocationNode, ID: "node-q"}})
		}, typ: MsgRegistrationCreate, p: RegistrationCreate{Registration: pendingReg("reg-q", "node-q")}, err: ErrConflict},
		{name: "registration of an active node id", typ: MsgRegistrationCreate, p: RegistrationCreate{Registration: pendingReg("reg-q", "node-a")}, err: ErrExists},
		{name: "registration of a node id whose certificate expired", setup: func(h *harness) {
			h.now = t0.Add(24 * time.Hour)
		}, typ: MsgRegistrationCreate, p: RegistrationCreate{Registration: pendingReg("reg-q", "node-a")},
			check: func(t *testing.T, h *harness) {
				if r, ok := h.s.Registration("reg-q"); !ok || r.Status != RegistrationPending {
					t.Fatalf("registration %+v ok=%v", r, ok)
				}
			}},
		{name: "registration of an active node id a second before its certificate expires", setup: func(h *harness) {
			h.now = t0.Add(24*time.Hour - 2*time.Second)
		}, typ: MsgRegistrationCreate, p: RegistrationCreate{Registration: pendingReg("reg-q", "node-a")}, err: ErrExists},
		{name: "registration with token of an active node id consumes nothing", typ: MsgRegistrationCreate, p: RegistrationCreate{Registration: pendingReg("reg-q", "node-a"), TokenHash: hashOf("secret-1"), Cert: &Issued{Issuer: "root-2", Serial: "c1", NodeID: "node-a", NotAfter: later, Cert: der("c")}}, err: ErrExists,
			check: func(t *testing.T, h *harness) {
				if tok, _ := h.s.JoinToken(hashOf("secret-1")); tok.Used != 1 {
					t.Fatalf("token used %d, want 1", tok.Used)
				}
			}},
		{name: "registration approve when the node became active meanwhile", setup: func(h *harness) {
			h.ok(MsgRegistrationCreate, RegistrationCreate{Registration: pendingReg("reg-p2", "node-p"), TokenHash: hashOf("secret-1"),
				Cert: &Issued{Issuer: "root-1", Serial: "b2", NodeID: "node-p", NotAfter: later, Cert: der("b2")}})
		}, typ: MsgRegistrationApprove, p: RegistrationApprove{ID: "reg-p", Cert: cert("root-1", "b1", "node-p")}, err: ErrExists},
		{name: "registration approve", typ: MsgRegistrationApprove, p: RegistrationApprove{ID: "reg-p", Cert: cert("root-1", "b1", "node-p")},
			check: func(t *testing.T, h *harness) {
				r, _ := h.s.Registration("reg-p")
				n, ok := h.s.Node("node-p")
				if r.Status != RegistrationApproved || !ok || n.CertSerial != "b1" || n.Principal != PrincipalNode {
					t.Fatalf("registration %+v node %+v", r, n)
				}
			}},
		{name: "registration approve approved", typ: MsgRegistrationApprove, p: RegistrationApprove{ID: "reg-a", Cert: cert("root-1", "b1", "node-a")}, err: ErrConflict},
		{name: "registration approve unknown", typ: MsgRegistrationApprove, p: RegistrationApprove{ID: "reg-x", Cert: cert("root-1", "b1", "node-p")}, err: ErrNotFound},
		{name: "registration approve other node", typ: MsgRegistrationApprove, p: RegistrationApprove{ID: "reg-p", Cert: cert("root-1", "b1", "node-a")}, err: ErrInvalid},
		{name: "registration approve repeated serial", typ: MsgRegistrationApprove, p: RegistrationApprove{ID: "reg-p", Cert: cert("root-1", "a1", "node-p")}, err: ErrExists},
		{name: "registration deny", typ: MsgRegistrationDeny, p: RegistrationDeny{ID: "reg-p", Reason: "unknown device"},
			check: func(t *testing.T, h *harness) {
				if r, _ := h.s.Registration("reg-p"); r.Status != RegistrationDenied || r.Reason != "unknown device" {
					t.Fatalf("registration %+v", r)
				}
			}},
		{name: "registration deny approved", typ: MsgRegistrationDeny, p: RegistrationDeny{ID: "reg-a"}, err: ErrConflict},
		{name: "registration deny unknown", typ: MsgRegistrationDeny, p: RegistrationDeny{ID: "reg-x"}, err: ErrNotFound},

		// policy and routes
		{name: "policy set", typ: MsgPolicySet, p: PolicySet{Text: "permit(principal, action, resource);\n", ExpectVersion: 0},
			check: func(t *testing.T, h *harness) {
				if p := h.s.Policy(); p.Version != 1 || p.ModifyIndex != h.idx {
					t.Fatalf("policy %+v", p)
				}
			}},
		{name: "policy set stale", typ: MsgPolicySet, p: PolicySet{Text: "x", ExpectVersion: 3}, err: ErrConflict},
		{name: "policy set control char", typ: MsgPolicySet, p: PolicySet{Text: "permit\x00"}, err: ErrInvalid},
		{name: "route auth put", typ: MsgRouteAuthPut, p: RouteAuthPut{Auth: RouteAuth{Prefix: "10.0.0.0/8", Origins: []string{"node-a"}, MaxLength: 24}}},
		{name: "route auth put v6", typ: MsgRouteAuthPut, p: RouteAuthPut{Auth: RouteAuth{Prefix: "2001:db8::/32", Origins: []string{"node-a", "AS64500"}, MaxLength: 48}}},
		{name: "route auth non-canonical prefix", typ: MsgRouteAuthPut, p: RouteAuthPut{Auth: RouteAuth{Prefix: "10.0.0.1/8", Origins: []string{"node-a"}, MaxLength: 24}}, err: ErrInvalid},
		{name: "route auth max length too short", typ: MsgRouteAuthPut, p: RouteAuthPut{Auth: RouteAuth{Prefix: "10.0.0.0/8", Origins: []string{"node-a"}, MaxLength: 4}}, err: ErrInvalid},
		{name: "route auth max length too long", typ: MsgRouteAuthPut, p: RouteAuthPut{Auth: RouteAuth{Prefix: "10.0.0.0/8", Origins: []string{"node-a"}, MaxLength: 33}}, err: ErrInvalid},
		{name: "route auth no origins", typ: MsgRouteAuthPut, p: RouteAuthPut{Auth: RouteAuth{Prefix: "10.0.0.0/8", MaxLength: 8}}, err: ErrInvalid},
		{name: "route auth put with an AS", typ: MsgRouteAuthPut, p: RouteAuthPut{Auth: RouteAuth{Prefix: "10.0.0.0/8", Origins: []string{"node-a"}, MaxLength: 24, ASN: 4200000000}},
			check: func(t *testing.T, h *harness) {
				if a, _ := h.s.RouteAuth("10.0.0.0/8"); a.ASN != 4200000000 {
					t.Fatalf("auth.asn %d", a.ASN)
				}
			}},
		{name: "route auth AS_TRANS", typ: MsgRouteAuthPut, p: RouteAuthPut{Auth: RouteAuth{Prefix: "10.0.0.0/8", Origins: []string{"node-a"}, MaxLength: 8, ASN: 23456}}, err: ErrInvalid},
		{name: "route auth AS 65535", typ: MsgRouteAuthPut, p: RouteAuthPut{Auth: RouteAuth{Prefix: "10.0.0.0/8", Origins: []string{"node-a"}, MaxLength: 8, ASN: 65535}}, err: ErrInvalid},
		{name: "route auth AS 4294967295", typ: MsgRouteAuthPut, p: RouteAuthPut{Auth: RouteAuth{Prefix: "10.0.0.0/8", Origins: []string{"node-a"}, MaxLength: 8, ASN: 4294967295}}, err: ErrInvalid},
		{name: "route auth AS negative", raw: rawCommand(MsgRouteAuthPut, 1, t0.Add(time.Hour), map[string]any{"auth": map[string]any{"prefix": "10.0.0.0/8", "origins": []string{"node-a"}, "max_length": 8, "asn": -1}}), err: ErrInvalid},
		{name: "route auth put new when expected absent", typ: MsgRouteAuthPut, p: RouteAuthPut{Auth: RouteAuth{Prefix: "10.9.0.0/16", Origins: []string{"node-a"}, MaxLength: 24},
			ExpectModifyIndex: new(uint64)}},
		{name: "route auth put over a change made meanwhile", setup: func(h *harness) {
			h.ok(MsgRouteAuthPut, RouteAuthPut{Auth: RouteAuth{Prefix: "10.9.0.0/16", Origins: []string{"node-a"}, MaxLength: 24}})
		}, typ: MsgRouteAuthPut, p: RouteAuthPut{Auth: RouteAuth{Prefix: "10.9.0.0/16", Origins: []string{"node-a", "node-b"}, MaxLength: 24},
			ExpectModifyIndex: new(uint64)}, err: ErrConflict},
		{name: "route auth delete over a change made meanwhile", setup: func(h *harness) {
			h.ok(MsgRouteAuthPut, RouteAuthPut{Auth: RouteAuth{Prefix: "10.9.0.0/16", Origins: []string{"node-a"}, MaxLength: 24}})
		}, typ: MsgRouteAuthDelete, p: RouteAuthDelete{Prefix: "10.9.0.0/16", ExpectModifyIndex: func() *uint64 { v := uint64(3); return &v }()}, err: ErrConflict},
		{name: "anchor put over a change made meanwhile", typ: MsgTrustAnchorPut, p: TrustAnchorPut{Anchor: TrustAnchor{Network: testNetwork, Roots: [][]byte{der("root")},
			Accept: []string{testNetwork, "fed.example.org"}}, ExpectModifyIndex: new(uint64)}, err: ErrConflict},
		{name: "route auth delete unknown", typ: MsgRouteAuthDelete, p: RouteAuthDelete{Prefix: "10.0.0.0/8"}, err: ErrNotFound},
		{name: "route auth delete", setup: func(h *harness) {
			h.ok(MsgRouteAuthPut, RouteAuthPut{Auth: RouteAuth{Prefix: "10.0.0.0/8", Origins: []string{"node-a"}, MaxLength: 8}})
		}, typ: MsgRouteAuthDelete, p: RouteAuthDelete{Prefix: "10.0.0.0/8"}},

		// envelopes
		{name: "newer version", raw: rawCommand(MsgServerPut, 2, t0.Add(time.Hour), ServerPut{Server: Server{Name: "x", RaftAddr: "a:1", APIAddr: "a:2", Status: ServerVoter}}), err: ErrVersion},
		{name: "unknown payload field", raw: rawCommand(MsgServerRemove, 1, t0.Add(time.Hour), map[string]any{"name": "root-1", "force": true}), err: ErrInvalid},
		{name: "payload not an object", raw: []byte("\x02" + `{"v":1,"ts":1,"p":["root-1"]}`), err: ErrInvalid},
		{name: "payload wrong field type", raw: []byte("\x02" + `{"v":1,"ts":1,"p":{"name":5}}`), err: ErrInvalid},
		{name: "empty command", raw: []byte{}, err: ErrInvalid},
		{name: "ignorable unknown type", raw: []byte{0xc2, 'x'},
			check: func(t *testing.T, h *harness) {}},
		{name: "known type with ignore flag applies", raw: rawCommand(MsgServerRemove|IgnoreUnknownFlag, 1, t0.Add(time.Hour), ServerRemove{Name: "root-2"}),
			check: func(t *testing.T, h *harness) {
				if _, ok := h.s.Server("root-2"); ok {
					t.Fatal("root-2 still there")
				}
			}},
	}

	seen := map[MsgType]bool{}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.seed()
			if tc.setup != nil {
				tc.setup(h)
			}
			before := h.s.Hash()
			var res Result
			if tc.raw != nil {
				res = h.raw(tc.raw)
			} else {
				seen[tc.typ] = true
				res = h.apply(tc.typ, tc.p)
			}
			after := h.s.Hash()
			if tc.err == nil {
				if res.Err != nil {
					t.Fatalf("rejected: %v", res.Err)
				}
				if after == before && !res.Ignored && tc.name != "ignorable unknown type" {
					t.Fatal("accepted command left the hash unchanged")
				}
			} else {
				if !errors.Is(res.Err, tc.err) {
					t.Fatalf("err = %v, want %v", res.Err, tc.err)
				}
				var ce *CommandError
				if !errors.As(res.Err, &ce) || (len(tc.raw) > 0 && ce.Type != MsgType(tc.raw[0])) || (tc.raw == nil && ce.Type != tc.typ) {
					t.Fatalf("err %#v is not a *CommandError of the command's type", res.Err)
				}
				if after != before {
					t.Fatal("rejected command changed the hash")
				}
			}
			if tc.check != nil {
				tc.check(t, h)
			}
		})
	}
	for typ := MsgType(1); typ < msgTypeEnd; typ++ {
		if typ.Known() && !seen[typ] {
			t.Errorf("no case for %v", typ)
		}
	}
}

// TestRemovedTypes: the command types removed before the first release are
// unknown: Encode refuses them and Apply stops on one, as on any type the
// replica does not know (no log holds them).
func TestRemovedTypes(t *testing.T) {
	for _, typ := range []MsgType{msgRemovedCAInit, msgRemovedNodePut, msgRemovedIssuedPut, msgRemovedJWKSetState, msgRemovedJWKDelete} {
		if typ.Known() {
			t.Fatalf("%v is known", typ)
		}
		if _, err := Encode(typ, t0, struct{}{}); !errors.Is(err, ErrInvalid) {
			t.Fatalf("Encode(%v) = %v", typ, err)
		}
		func() {
			defer func() {
				if r := recover(); r == nil {
					t.Fatalf("applying %v did not stop the replica", typ)
				}
			}()
			New().Apply(1, append([]byte{byte(typ)}, `{"v":1,"ts":1,"p":{}}`...))
		}()
	}
}

// TestGenesis: a network's first state is one command, all of it or
// nothing, on an empty state only.
func TestGenesis(t *testing.T) {
	key := json.RawMessage(`{"kty":"EC","crv":"P-256","x":"AA","y":"BB"}`)
	full := func() Genesis {
		return Genesis{CA: CA{Network: testNetwork, Active: der("root"), SealedKey: []byte("sealed")},
			Issuer: &Issuer{ID: "r1", Network: testNetwork, Cert: der("issuer-r1"), Status: IssuerActive},
			Server: &Server{Name: "r1", RaftAddr: "10.0.0.1:8300", APIAddr: "10.0.0.1:8443", Status: ServerVoter},
			Anchor: &TrustAnchor{Network: testNetwork, Roots: [][]byte{der("root")}, Accept: []string{testNetwork}},
			Token:  &JoinToken{ID: "t-root", Hash: hashOf("root-secret"), Kind: TokenKindRoot, Uses: 1, Expiry: t0.Add(time.Hour)},
			Key:    &JWK{KID: "kid-admin", Key: key, Node: "r1", State: JWKActive}}
	}
	t.Run("all parts", func(t *testing.T) {
		h := newHarness(t)
		h.ok(MsgGenesis, full())
		if h.s.Network() != testNetwork {
			t.Fatalf("network %q", h.s.Network())
		}
		if _, ok := h.s.CA(testNetwork); !ok {
			t.Error("no CA")
		}
		if is, ok := h.s.Issuer("r1"); !ok || is.CreateIndex != 1 {
			t.Errorf("issuer %+v %v", is, ok)
		}
		if sv, ok := h.s.Server("r1"); !ok || sv.Status != ServerVoter {
			t.Errorf("server %+v %v", sv, ok)
		}
		if _, ok := h.s.TrustAnchor(testNetwork); !ok {
			t.Error("no anchor")
		}
		if tok, ok := h.s.JoinTokenByID("t-root"); !ok || tok.Kind != TokenKindRoot {
			t.Errorf("token %+v %v", tok, ok)
		}
		if k, ok := h.s.JWK("kid-admin"); !ok || k.Node != "r1" {
			t.Errorf("key %+v %v", k, ok)
		}
		if res := h.apply(MsgGenesis, full()); !errors.Is(res.Err, ErrExists) {
			t.Fatalf("a second genesis: %v", res.Err)
		}
	})
	t.Run("with an AS number", func(t *testing.T) {
		h := newHarness(t)
		g := full()
		g.CA.ASN = 64500
		h.ok(MsgGenesis, g)
		if ca, _ := h.s.CA(testNetwork); ca.ASN != 64500 {
			t.Fatalf("ca.asn %d", ca.ASN)
		}
	})
	bad := []struct {
		name string
		edit func(*Genesis)
	}{
		{"issuer of another network", func(g *Genesis) { g.Issuer.Network = "other.example.net" }},
		{"issuer revoked", func(g *Genesis) { g.Issuer.Status = IssuerRevoked }},
		{"server not a voter", func(g *Genesis) { g.Server.Status = ServerJoining }},
		{"server without its issuer", func(g *Genesis) { g.Issuer = nil }},
		{"server named apart from its issuer", func(g *Genesis) { g.Server.Name = "r2" }},
		{"anchor of another network", func(g *Genesis) { g.Anchor.Network = "other.example.net" }},
		{"node-join token", func(g *Genesis) { g.Token.Kind = TokenKindNode }},
		{"token with DNS names", func(g *Genesis) { g.Token.DNSNames = []string{"a." + testNetwork} }},
		{"key of another owner", func(g *Genesis) { g.Key.Node = "r2" }},
		{"key without a server", func(g *Genesis) { g.Server = nil }},
		{"malformed key", func(g *Genesis) { g.Key.Key = json.RawMessage(`{}`) }},
		{"CA of AS_TRANS", func(g *Genesis) { g.CA.ASN = 23456 }},
		{"CA of AS 65535", func(g *Genesis) { g.CA.ASN = 65535 }},
		{"CA of AS 4294967295", func(g *Genesis) { g.CA.ASN = 4294967295 }},
	}
	for _, c := range bad {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t)
			g := full()
			c.edit(&g)
			hash := h.s.Hash()
			if res := h.apply(MsgGenesis, g); !errors.Is(res.Err, ErrInvalid) {
				t.Fatalf("err %v, want ErrInvalid", res.Err)
			}
			if h.s.Hash() != hash || h.s.Network() != "" {
				t.Fatal("a refused genesis changed the state")
			}
		})
	}
	t.Run("state not empty", func(t *testing.T) {
		h := newHarness(t)
		h.ok(MsgServerPut, ServerPut{Server: Server{Name: "x", RaftAddr: "a:1", APIAddr: "a:2", Status: ServerJoining}})
		hash := h.s.Hash()
		if res := h.apply(MsgGenesis, full()); !errors.Is(res.Err, ErrExists) || h.s.Hash() != hash {
			t.Fatalf("err %v, hash changed %v", res.Err, h.s.Hash() != hash)
		}
	})
}

// manyFederatedKeys is n well-formed federated keys, sorted by kid.
func manyFederatedKeys(n int) []FederatedKey {
	keys := make([]FederatedKey, n)
	for i := range keys {
		keys[i] = FederatedKey{KID: fmt.Sprintf("k%05d", i), Node: "f-1", Key: []byte("{}")}
	}
	return keys
}

// TestExclusiveMembership: exclusive membership is the own network's
// anchor's alone. ExclusiveSet needs the state's network and its anchor;
// a genesis may start exclusive; TrustAnchorPut writes the own record
// whole, so a read-modify-write of the access list (trust add) carries the
// flag on, and one that leaves it out clears it.
func TestExclusiveMembership(t *testing.T) {
	t.Run("before the genesis", func(t *testing.T) {
		h := newHarness(t)
		if res := h.apply(MsgExclusiveSet, ExclusiveSet{Network: testNetwork, Exclusive: true}); !errors.Is(res.Err, ErrInvalid) {
			t.Fatalf("err = %v, want ErrInvalid", res.Err)
		}
	})
	t.Run("without the own anchor", func(t *testing.T) {
		h := newHarness(t)
		h.ok(MsgGenesis, Genesis{CA: CA{Network: testNetwork, Active: der("root"), SealedKey: []byte("sealed")}})
		hash := h.s.Hash()
		if res := h.apply(MsgExclusiveSet, ExclusiveSet{Network: testNetwork, Exclusive: true}); !errors.Is(res.Err, ErrNotFound) || h.s.Hash() != hash {
			t.Fatalf("err = %v, want ErrNotFound and no change", res.Err)
		}
	})
	t.Run("genesis", func(t *testing.T) {
		h := newHarness(t)
		h.ok(MsgGenesis, Genesis{CA: CA{Network: testNetwork, Active: der("root"), SealedKey: []byte("sealed")},
			Anchor: &TrustAnchor{Network: testNetwork, Roots: [][]byte{der("root")}, Accept: []string{testNetwork}, Exclusive: true}})
		if a, _ := h.s.TrustAnchor(testNetwork); !a.Exclusive {
			t.Fatalf("own anchor %+v", a)
		}
	})
	t.Run("the access list rewritten", func(t *testing.T) {
		h := newHarness(t)
		h.seed()
		own, _ := h.s.TrustAnchor(testNetwork)
		h.ok(MsgExclusiveSet, ExclusiveSet{Network: testNetwork, Exclusive: true, ExpectModifyIndex: own.ModifyIndex})
		own, _ = h.s.TrustAnchor(testNetwork)
		next := own
		next.Accept = append(slices.Clone(own.Accept), "fed.example.org")
		h.ok(MsgTrustAnchorPut, TrustAnchorPut{Anchor: next, ExpectModifyIndex: &own.ModifyIndex})
		if a, _ := h.s.TrustAnchor(testNetwork); !a.Exclusive || len(a.Accept) != 2 {
			t.Fatalf("own anchor after the access list changed: %+v", a)
		}
		h.ok(MsgTrustAnchorPut, TrustAnchorPut{Anchor: TrustAnchor{Network: testNetwork, Roots: own.Roots, Accept: own.Accept}})
		if a, _ := h.s.TrustAnchor(testNetwork); a.Exclusive {
			t.Fatalf("own anchor written without the flag: %+v", a)
		}
	})
}
