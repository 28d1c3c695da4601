package trust

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/keymesh/keymesh/fsm"
)

const net1 = "mainnet.example.net"

// gen makes random commands for a store: the trust tables change (puts,
// changes, deletions through prunes and removals) among commands that
// touch other tables or are refused.
type gen struct {
	t     testing.TB
	rng   *rand.Rand
	s     *fsm.Store
	idx   uint64
	now   time.Time
	nodes []string
	kids  []string
	pfxs  []string
}

func newGen(t testing.TB, seed uint64) *gen {
	g := &gen{t: t, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), s: fsm.New(), now: time.Unix(1_900_000_000, 0).UTC()}
	g.apply(fsm.MsgGenesis, fsm.Genesis{CA: fsm.CA{Network: net1, Active: der("root"), SealedKey: []byte("sealed")}})
	g.apply(fsm.MsgTrustAnchorPut, fsm.TrustAnchorPut{Anchor: fsm.TrustAnchor{Network: net1, Roots: [][]byte{der("root")}, Accept: []string{net1}}})
	g.apply(fsm.MsgServerPut, fsm.ServerPut{Server: fsm.Server{Name: "r1", RaftAddr: "10.0.0.1:1", APIAddr: "10.0.0.1:2", Status: fsm.ServerVoter}})
	g.apply(fsm.MsgJoinTokenCreate, fsm.JoinTokenCreate{Token: fsm.JoinToken{ID: "tok", Hash: fmt.Sprintf("%064x", 1), Kind: fsm.TokenKindNode,
		Principal: fsm.PrincipalNode, Uses: fsm.MaxTokenUses, Expiry: g.now.Add(1000 * time.Hour)}})
	return g
}

// cert is a certificate record for node id, valid for d.
func (g *gen) cert(id string, d time.Duration) *fsm.Issued {
	return &fsm.Issued{Issuer: "r1", Serial: fmt.Sprintf("%x", 1+g.rng.Uint64()>>4), NodeID: id, NotAfter: g.now.Add(d), Cert: der("c")}
}

func der(s string) []byte { return append([]byte{0x30, byte(len(s))}, s...) }

func (g *gen) apply(t fsm.MsgType, p any) fsm.Result {
	g.t.Helper()
	g.now = g.now.Add(time.Duration(1+g.rng.IntN(3)) * time.Second)
	data, err := fsm.Encode(t, g.now, p)
	if err != nil {
		g.t.Fatalf("encode %v: %v", t, err)
	}
	g.idx++
	return g.s.Apply(g.idx, data)
}

func (g *gen) pick(list []string, fresh func() string) string {
	if len(list) == 0 || g.rng.IntN(4) == 0 {
		return fresh()
	}
	return list[g.rng.IntN(len(list))]
}

// step applies one random command.
func (g *gen) step() {
	r := g.rng
	switch r.IntN(12) {
	case 0: // a node registers (again, once its certificate expired)
		id := g.pick(g.nodes, func() string { n := fmt.Sprintf("n%d", len(g.nodes)); g.nodes = append(g.nodes, n); return n })
		g.apply(fsm.MsgRegistrationCreate, fsm.RegistrationCreate{
			Registration: fsm.Registration{ID: fmt.Sprintf("reg-%d", g.idx), NodeID: id, Network: net1, Principal: fsm.PrincipalNode, CSR: der("csr")},
			TokenHash:    fmt.Sprintf("%064x", 1), Cert: g.cert(id, time.Duration(1+r.IntN(48))*time.Minute)})
	case 1: // a node renews
		if len(g.nodes) > 0 {
			id := g.nodes[r.IntN(len(g.nodes))]
			n, _ := g.s.Node(id)
			g.apply(fsm.MsgNodeCertRenew, fsm.NodeCertRenew{Cert: *g.cert(id, time.Hour), Presented: n.CertSerial})
		}
	case 2, 3: // a key of a node, with an end of life the prune will pass
		if len(g.nodes) == 0 {
			return
		}
		kid := g.pick(g.kids, func() string { k := fmt.Sprintf("kid%d", len(g.kids)); g.kids = append(g.kids, k); return k })
		g.apply(fsm.MsgJWKPut, fsm.JWKPut{Key: fsm.JWK{KID: kid, Key: json.RawMessage(`{"kty":"EC","crv":"P-256","x":"AA","y":"BB"}`),
			Node: g.nodes[r.IntN(len(g.nodes))], State: fsm.JWKActive, NotAfter: g.now.Add(time.Duration(1+r.IntN(600)) * time.Second)}})
	case 4: // a key starts retiring
		if len(g.kids) > 0 {
			kid := g.kids[r.IntN(len(g.kids))]
			if k, ok := g.s.JWK(kid); ok {
				k.State = fsm.JWKRetiring
				g.apply(fsm.MsgJWKPut, fsm.JWKPut{Key: k})
			}
		}
	case 5, 6: // revocations of every kind, some soon prunable
		kinds := []fsm.RevocationKind{fsm.RevocationToken, fsm.RevocationKey, fsm.RevocationCert, fsm.RevocationNode}
		k := kinds[r.IntN(len(kinds))]
		id := fmt.Sprintf("t%d", r.IntN(5000))
		var prune time.Time
		switch k {
		case fsm.RevocationCert:
			id = fmt.Sprintf("%x", 1+r.IntN(1<<20))
		case fsm.RevocationKey:
			id = g.pick(g.kids, func() string { return fmt.Sprintf("kidx%d", r.IntN(100)) })
		case fsm.RevocationNode:
			id = g.pick(g.nodes, func() string { return fmt.Sprintf("gone%d", r.IntN(100)) })
		}
		if k != fsm.RevocationNode {
			prune = g.now.Add(time.Duration(1+r.IntN(900)) * time.Second)
		}
		g.apply(fsm.MsgRevoke, fsm.Revoke{Revocation: fsm.Revocation{Kind: k, ID: id, Reason: "r", PruneAfter: prune}})
	case 7: // the leader's prune: deletions of revocations, keys, tokens
		g.now = g.now.Add(time.Duration(r.IntN(300)) * time.Second)
		g.apply(fsm.MsgPruneRevocations, fsm.PruneRevocations{Issuance: true})
	case 8: // route authorizations come and go
		pfx := g.pick(g.pfxs, func() string {
			p := fmt.Sprintf("10.%d.0.0/16", len(g.pfxs)%250)
			g.pfxs = append(g.pfxs, p)
			return p
		})
		if r.IntN(3) == 0 {
			g.apply(fsm.MsgRouteAuthDelete, fsm.RouteAuthDelete{Prefix: pfx})
		} else {
			g.apply(fsm.MsgRouteAuthPut, fsm.RouteAuthPut{Auth: fsm.RouteAuth{Prefix: pfx, Origins: []string{"n0"}, MaxLength: 24}})
		}
	case 9: // federated anchors come and go; the own one turns exclusive and back
		network := fmt.Sprintf("fed%d.example.net", r.IntN(4))
		switch r.IntN(5) {
		case 0, 1:
			g.apply(fsm.MsgTrustAnchorDelete, fsm.TrustAnchorDelete{Network: network})
		case 2:
			own, _ := g.s.TrustAnchor(net1)
			g.apply(fsm.MsgExclusiveSet, fsm.ExclusiveSet{Network: net1, Exclusive: !own.Exclusive, ExpectModifyIndex: own.ModifyIndex})
		default:
			g.apply(fsm.MsgTrustAnchorPut, fsm.TrustAnchorPut{Anchor: fsm.TrustAnchor{Network: network, Roots: [][]byte{der(network)}}})
		}
	case 10: // policy writes, some with a stale version (refused)
		v := g.s.Policy().Version
		if r.IntN(3) == 0 {
			v++
		}
		g.apply(fsm.MsgPolicySet, fsm.PolicySet{Text: fmt.Sprintf("// v%d", r.IntN(100)), ExpectVersion: v})
	case 11: // servers join and leave
		name := fmt.Sprintf("r%d", 2+r.IntN(3))
		if r.IntN(2) == 0 {
			g.apply(fsm.MsgServerRemove, fsm.ServerRemove{Name: name})
		} else {
			g.apply(fsm.MsgServerPut, fsm.ServerPut{Server: fsm.Server{Name: name, RaftAddr: name + ":1", APIAddr: name + ":2", Status: fsm.ServerVoter}})
		}
	}
}

// same compares a State with the store's state, table by table and record
// by record.
func same(t *testing.T, s *fsm.Store, st *State) {
	t.Helper()
	if st.Index() != s.Index() {
		t.Fatalf("state at index %d, store at %d", st.Index(), s.Index())
	}
	eq := func(name string, want, got any) {
		t.Helper()
		if !reflect.DeepEqual(want, got) {
			t.Fatalf("index %d: %s differ:\n store %+v\n state %+v", s.Index(), name, want, got)
		}
	}
	eq("anchors", s.TrustAnchors(), nilIfEmpty(st.TrustAnchors()))
	eq("revocations", nilIfEmpty(s.Revocations()), nilIfEmpty(st.Revocations()))
	eq("jwks", nilIfEmpty(s.JWKS()), nilIfEmpty(st.JWKS()))
	eq("nodes", nilIfEmpty(s.Nodes()), nilIfEmpty(st.Nodes()))
	eq("servers", nilIfEmpty(s.Servers()), nilIfEmpty(st.Servers()))
	eq("route auths", nilIfEmpty(s.RouteAuths()), nilIfEmpty(st.RouteAuths()))
	eq("policy", s.Policy(), st.Policy())
	for _, r := range s.Revocations() {
		if got, ok := st.Revoked(r.Kind, r.ID); !ok || !reflect.DeepEqual(got, r) {
			t.Fatalf("index %d: revocation %s:%s: %+v %v", s.Index(), r.Kind, r.ID, got, ok)
		}
	}
}

func nilIfEmpty[V any](l []V) []V {
	if len(l) == 0 {
		return nil
	}
	return l
}

func deltaFrom(s *fsm.Store, since uint64, full bool) (d Delta) {
	s.Read(func(r fsm.Reader) { d = DeltaFrom(r, since, full) })
	return d
}

// TestFollowRandomChanges: a State following a store through 10,000
// random changes, with deltas skipped (the next one covers more) and
// deltas from a wrong base (refused with ErrGap, then a full document),
// holds the store's state record by record, and Apply never changes the
// state it is called on.
func TestFollowRandomChanges(t *testing.T) {
	g := newGen(t, 42)
	st, err := NewState(deltaFrom(g.s, 0, false))
	if err != nil {
		t.Fatal(err)
	}
	same(t, g.s, st)
	var deltas, fulls, gaps, maxRevs, maxKeys, maxNodes int
	for i := 0; i < 10_000; i++ {
		g.step()
		switch g.rng.IntN(10) {
		case 0, 1: // this round the follower does not ask
		case 2: // a delta from another base: refused, then a full document
			wrong := st.Index() + 1 + uint64(g.rng.IntN(3))
			if g.rng.IntN(2) == 0 && st.Index() > 2 {
				wrong = st.Index() - 1 - uint64(g.rng.IntN(2))
			}
			before := st.Document()
			if _, err := st.Apply(deltaFrom(g.s, wrong, false)); !errors.Is(err, ErrGap) {
				t.Fatalf("a delta from %d applied to a state at %d: %v", wrong, st.Index(), err)
			}
			if !reflect.DeepEqual(before, st.Document()) {
				t.Fatal("a refused delta changed the state")
			}
			gaps++
			if st, err = st.Apply(deltaFrom(g.s, st.Index(), true)); err != nil {
				t.Fatal(err)
			}
			fulls++
		default:
			prev := st
			prevDoc := prev.Document()
			d := deltaFrom(g.s, st.Index(), false)
			if d.Reset {
				fulls++
			} else {
				deltas++
			}
			if st, err = st.Apply(d); err != nil {
				t.Fatalf("delta %d..%d: %v", d.Since, d.Index, err)
			}
			if i%97 == 0 && !reflect.DeepEqual(prevDoc, prev.Document()) {
				t.Fatal("Apply changed the state it was called on")
			}
		}
		if i%500 == 0 {
			st, err = st.Apply(deltaFrom(g.s, st.Index(), false))
			if err != nil {
				t.Fatal(err)
			}
			same(t, g.s, st)
			r, k, n := st.Sizes()
			maxRevs, maxKeys, maxNodes = max(maxRevs, r), max(maxKeys, k), max(maxNodes, n)
		}
	}
	if st, err = st.Apply(deltaFrom(g.s, st.Index(), false)); err != nil {
		t.Fatal(err)
	}
	same(t, g.s, st)
	t.Logf("10,000 changes: %d deltas, %d full documents, %d gaps; at most %d revocations, %d keys, %d nodes held",
		deltas, fulls, gaps, maxRevs, maxKeys, maxNodes)
	if maxRevs == 0 || maxKeys == 0 || maxNodes == 0 || gaps == 0 {
		t.Fatal("the random changes did not exercise the tables")
	}
}

// TestApplyRefuses is the table of deltas a state does not take.
func TestApplyRefuses(t *testing.T) {
	g := newGen(t, 7)
	st, err := NewState(deltaFrom(g.s, 0, false))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		d    Delta
		want error
	}{
		{"other network", Delta{Network: "other.example.net", Since: st.Index(), Index: st.Index() + 1}, ErrOtherNetwork},
		{"wrong base", Delta{Network: net1, Since: st.Index() + 1, Index: st.Index() + 2}, ErrGap},
		{"index before its base", Delta{Network: net1, Since: st.Index(), Index: st.Index() - 1}, ErrBadDelta},
		{"record without key", Delta{Network: net1, Since: st.Index(), Index: st.Index() + 1, Put: Records{Nodes: []fsm.Node{{}}}}, ErrBadDelta},
	} {
		if _, err := st.Apply(tc.d); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	if _, err := NewState(Delta{Network: net1, Index: 5}); !errors.Is(err, ErrGap) {
		t.Errorf("a state from a delta: %v", err)
	}
	if same, err := st.Apply(Delta{Network: net1, Since: st.Index(), Index: st.Index()}); err != nil || same != st {
		t.Errorf("an empty delta: %v, same state %v", err, same == st)
	}
}

// TestNarrow: a node's --accept-network cuts its network's access list
// (its own network stays) and never widens it; a federated anchor's keys
// are found by kid, through the narrowed view too.
func TestNarrow(t *testing.T) {
	st, err := NewState(Delta{Network: net1, Index: 3, Reset: true, Put: Records{Anchors: []fsm.TrustAnchor{
		{Network: net1, Roots: [][]byte{{1}}, Accept: []string{net1, "b.example", "c.example"}},
		{Network: "b.example", Roots: [][]byte{{2}}, Keys: []fsm.FederatedKey{{KID: "kb1", Node: "b-1", Key: []byte("{}")}, {KID: "kb2", Node: "b-2", Key: []byte("{}")}}},
		{Network: "c.example", Roots: [][]byte{{3}}},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	accepted := func(v View) []string {
		for _, a := range v.TrustAnchors() {
			if a.Network == net1 {
				return a.Accept
			}
		}
		return nil
	}
	for _, tc := range []struct {
		accept []string
		want   []string
	}{
		{nil, []string{net1, "b.example", "c.example"}},
		{[]string{"b.example"}, []string{net1, "b.example"}},
		{[]string{"d.example"}, []string{net1}},                           // never widened
		{[]string{"c.example", "d.example"}, []string{net1, "c.example"}}, // the list's part only
	} {
		if got := accepted(Narrow(st, tc.accept)); !slices.Equal(got, tc.want) {
			t.Errorf("accept %v: access list %v, want %v", tc.accept, got, tc.want)
		}
	}
	if got := accepted(st); !slices.Equal(got, []string{net1, "b.example", "c.example"}) {
		t.Errorf("narrowing changed the state underneath: %v", got)
	}
	for _, v := range []View{st, Narrow(st, []string{"c.example"})} {
		if network, k, ok := v.FederatedKey("kb2"); !ok || network != "b.example" || k.Node != "b-2" {
			t.Errorf("federated key kb2: %q %+v %v", network, k, ok)
		}
		if _, _, ok := v.FederatedKey("kb3"); ok {
			t.Error("an unknown federated kid found")
		}
	}
}

// TestExclusive: the own anchor's exclusive membership reaches a follower
// with the anchor record, through a delta as the root answers it (JSON,
// as on the wire), and Exclusive reports it, on the store, on the
// followed state and through a narrowed view; cleared, it is gone again.
// A network without an anchor, or a federated one, is not exclusive.
func TestExclusive(t *testing.T) {
	g := newGen(t, 1)
	g.apply(fsm.MsgTrustAnchorPut, fsm.TrustAnchorPut{Anchor: fsm.TrustAnchor{Network: "b.example", Roots: [][]byte{der("b")}}})
	st, err := NewState(deltaFrom(g.s, 0, true))
	if err != nil {
		t.Fatal(err)
	}
	if Exclusive(st, net1) || Exclusive(g.s, net1) {
		t.Fatal("exclusive before it was set")
	}
	follow := func(want bool) {
		t.Helper()
		own, _ := g.s.TrustAnchor(net1)
		if res := g.apply(fsm.MsgExclusiveSet, fsm.ExclusiveSet{Network: net1, Exclusive: want, ExpectModifyIndex: own.ModifyIndex}); res.Err != nil {
			t.Fatal(res.Err)
		}
		d := deltaFrom(g.s, st.Index(), false)
		if d.Reset || len(d.Put.Anchors) != 1 || d.Put.Anchors[0].Network != net1 {
			t.Fatalf("delta %+v", d)
		}
		wire, err := json.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		var got Delta
		if err := json.Unmarshal(wire, &got); err != nil {
			t.Fatal(err)
		}
		if st, err = st.Apply(got); err != nil {
			t.Fatal(err)
		}
		same(t, g.s, st)
		for _, a := range st.TrustAnchors() {
			if a.Network == net1 && a.Exclusive != want {
				t.Fatalf("own anchor %+v, want exclusive %v", a, want)
			}
		}
		for name, v := range map[string]View{"store": g.s, "state": st, "narrowed": Narrow(st, []string{"b.example"})} {
			if Exclusive(v, net1) != want {
				t.Errorf("%s: Exclusive(%s) = %v, want %v", name, net1, !want, want)
			}
			if Exclusive(v, "b.example") || Exclusive(v, "c.example") {
				t.Errorf("%s: a federated network or one without an anchor is exclusive", name)
			}
		}
	}
	follow(true)
	if doc, err := NewState(st.Document()); err != nil || !Exclusive(doc, net1) {
		t.Fatalf("the full document loses the flag: %v", err)
	}
	follow(false)
}
