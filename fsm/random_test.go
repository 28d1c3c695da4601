package fsm

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"
)

var seedFlag = flag.Uint64("fsm.seed", 0, "seed of the randomized fsm tests (0: from the clock)")

func testSeed(t *testing.T) uint64 {
	seed := *seedFlag
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (rerun with -fsm.seed=%d)", seed, seed)
	return seed
}

// cmdGen makes random commands over a small universe of names, so that
// commands collide, conflict and get rejected often. About one in ten is
// malformed on purpose.
type cmdGen struct {
	r   *rand.Rand
	now time.Time
	s   *Store // when set, peeked at so that compare-and-set and approvals succeed often
}

func (g *cmdGen) pick(prefix string, n int) string { return fmt.Sprintf("%s%d", prefix, g.r.IntN(n)) }
func (g *cmdGen) network() string {
	if g.s != nil && g.s.Network() != "" && g.chance(0.8) {
		return g.s.Network() // mostly the network of the genesis, so that issuers and nodes are accepted
	}
	return fmt.Sprintf("n%d.example", g.r.IntN(3))
}
func (g *cmdGen) serial() string {
	if g.chance(0.2) {
		return fmt.Sprintf("%x", 1+g.r.IntN(20)) // repeats
	}
	return fmt.Sprintf("%x", 1+g.r.IntN(1<<20))
}

// asn is mostly none, sometimes an AS, rarely one Apply refuses.
func (g *cmdGen) asn() uint32 {
	switch g.r.IntN(10) {
	case 0, 1:
		return 64500 + uint32(g.r.IntN(3))
	case 2:
		return 23456
	}
	return 0
}

func (g *cmdGen) later() time.Time      { return g.now.Add(time.Duration(g.r.IntN(3600)) * time.Second) }
func (g *cmdGen) chance(p float64) bool { return g.r.Float64() < p }

func (g *cmdGen) principal() string {
	return []string{PrincipalNode, PrincipalUser, PrincipalAdmin, "bogus"}[g.r.IntN(4)]
}

func (g *cmdGen) issued(node string) Issued {
	return Issued{Issuer: g.pick("s", 8), Serial: g.serial(), NodeID: node, NotAfter: g.later(), Cert: der(g.pick("c", 1000))}
}

// pending picks a pending registration of the store.
func (g *cmdGen) pending() (Registration, bool) {
	var pending []Registration
	for _, r := range g.s.Registrations() {
		if r.Status == RegistrationPending {
			pending = append(pending, r)
		}
	}
	if len(pending) == 0 {
		return Registration{}, false
	}
	return pending[g.r.IntN(len(pending))], true
}

// knownType is a command type this replica knows, at random.
func (g *cmdGen) knownType() MsgType {
	for {
		if t := MsgType(1 + g.r.IntN(int(msgTypeEnd)-1)); t.Known() {
			return t
		}
	}
}

func (g *cmdGen) next() []byte {
	g.now = g.now.Add(time.Duration(1+g.r.IntN(5000)) * time.Millisecond)
	switch g.r.IntN(40) {
	case 0:
		return []byte{byte(g.knownType()), '{'}
	case 1:
		return append([]byte{byte(IgnoreUnknownFlag | 0x70)}, `{"v":1}`...)
	case 2:
		return rawCommand(MsgPolicySet, 9, g.now, PolicySet{Text: "x"})
	}
	t := g.knownType()
	if g.s != nil && g.s.Network() == "" {
		t = MsgGenesis // a network begins with one; until then most commands are refused
	}
	var p any
	switch t {
	case MsgServerPut:
		p = ServerPut{Server: Server{Name: g.pick("s", 5), RaftAddr: g.pick("h", 9) + ":1", APIAddr: "a:2",
			Status: []string{ServerJoining, ServerVoter, ServerRemoved, "x"}[g.r.IntN(4)]}}
	case MsgServerRemove:
		p = ServerRemove{Name: g.pick("s", 6)}
	case MsgGenesis:
		p = Genesis{CA: CA{Network: g.network(), Active: der(g.pick("root", 5)), SealedKey: []byte(g.pick("k", 5))}}
	case MsgCAUpdate:
		u := CAUpdate{CA: CA{Network: g.network(), Active: der(g.pick("root", 5)), Prepared: [][]byte{der(g.pick("p", 3))}, SealedKey: []byte("k"), ASN: g.asn()},
			ExpectModifyIndex: uint64(g.r.IntN(40))}
		if ca, ok := g.s.CA(u.CA.Network); ok && g.chance(0.7) {
			u.ExpectModifyIndex = ca.ModifyIndex
		}
		p = u
	case MsgIssuerPut:
		p = &IssuerPut{Issuer: Issuer{ID: g.pick("s", 5), Network: g.network(), Cert: der("i"),
			Status: IssuerActive}}
		if g.chance(0.03) {
			p.(*IssuerPut).Issuer.Status = IssuerRevoked
		}
	case MsgJoinTokenCreate:
		id := g.pick("t", 8)
		tok := JoinToken{ID: id, Hash: hashOf(id), Kind: []string{TokenKindNode, TokenKindRoot}[g.r.IntN(2)],
			Uses: g.r.IntN(4), Expiry: g.later()}
		if g.chance(0.3) {
			tok.NodeID = g.pick("node", 30)
		}
		if g.chance(0.3) {
			tok.Principal = g.principal()
		}
		p = JoinTokenCreate{Token: tok}
	case MsgJoinTokenConsume:
		c := JoinTokenConsume{Hash: hashOf(g.pick("t", 8)), Kind: []string{TokenKindNode, TokenKindRoot}[g.r.IntN(2)], NodeID: g.pick("node", 30)}
		// Mostly a token that exists and fits, or a random one would
		// almost never be accepted (and that path never be walked).
		if g.s != nil && g.chance(0.6) {
			var live []JoinToken
			for _, t := range g.s.JoinTokens() {
				if !t.Revoked && t.Used < t.Uses {
					live = append(live, t)
				}
			}
			if len(live) > 0 {
				t := live[g.r.IntN(len(live))]
				c.Hash, c.Kind = t.Hash, t.Kind
				if t.NodeID != "" {
					c.NodeID = t.NodeID
				}
			}
		}
		p = c
	case MsgJoinTokenRevoke:
		p = JoinTokenRevoke{ID: g.pick("t", 8)}
	case MsgRevoke:
		kind := []RevocationKind{RevocationCert, RevocationToken, RevocationToken, RevocationKey, RevocationCert, RevocationCert, RevocationToken, RevocationKey, RevocationToken, RevocationNode}[g.r.IntN(10)]
		id := g.pick("jti", 200)
		switch kind {
		case RevocationCert:
			id = g.serial()
		case RevocationKey:
			id = g.pick("k", 30)
		case RevocationNode:
			id = g.pick("node", 30)
		}
		r := Revocation{Kind: kind, ID: id, Reason: g.pick("reason", 3)}
		if g.chance(0.7) {
			r.PruneAfter = g.later()
		}
		p = Revoke{Revocation: r}
	case MsgPruneRevocations:
		p = PruneRevocations{Issuance: g.chance(0.5)}
	case MsgTrustAnchorPut:
		p = TrustAnchorPut{Anchor: TrustAnchor{Network: g.network(), Roots: [][]byte{der(g.pick("r", 3))}, Accept: []string{g.network()}, Exclusive: g.chance(0.1)}}
	case MsgTrustAnchorDelete:
		p = TrustAnchorDelete{Network: g.network()}
	case MsgExclusiveSet:
		// Mostly the own network at its anchor's index, so that the flag
		// goes on and off; sometimes stale or a federated network.
		es := ExclusiveSet{Network: g.network(), Exclusive: g.chance(0.5), ExpectModifyIndex: uint64(g.r.IntN(40))}
		if a, ok := g.s.TrustAnchor(es.Network); ok && g.chance(0.8) {
			es.ExpectModifyIndex = a.ModifyIndex
		}
		p = es
	case MsgNodeCertRenew:
		r := NodeCertRenew{Cert: g.issued(g.pick("node", 30))}
		if nodes := g.s.Nodes(); len(nodes) > 0 && g.chance(0.7) {
			// An existing node, renewed by an active issuer, most times.
			n := nodes[g.r.IntN(len(nodes))]
			r.Cert.NodeID = n.ID
			for _, is := range g.s.Issuers() {
				if is.Status == IssuerActive && g.chance(0.5) {
					r.Cert.Issuer = is.ID
				}
			}
			if g.chance(0.5) {
				r.Presented = n.CertSerial
			}
		} else if g.chance(0.5) {
			r.Presented = g.serial()
		}
		p = r
	case MsgJWKPut:
		owner := g.pick("node", 30)
		if g.chance(0.3) {
			owner = g.pick("s", 5)
		}
		key := fmt.Sprintf(`{"kty":"EC","x":"%s"}`, g.pick("x", 3))
		if g.chance(0.05) {
			key = `{"kty":"EC","d":"private"}`
		}
		p = JWKPut{Key: JWK{KID: g.pick("k", 30), Key: json.RawMessage(key), Node: owner,
			State: []string{JWKStaged, JWKActive, JWKRetiring}[g.r.IntN(3)], NotAfter: g.later()}}
	case MsgRegistrationCreate:
		// Mostly fresh node ids: a registration for an active node is
		// refused, and the known ids soon are.
		node := g.pick("node", 30)
		if g.r.IntN(4) > 0 {
			node = g.pick("fresh", 400)
		}
		rc := RegistrationCreate{Registration: Registration{ID: g.pick("r", 100), NodeID: node, Network: g.network(), Principal: g.principal(), CSR: der("csr")}}
		if g.chance(0.5) {
			rc.TokenHash = hashOf(g.pick("t", 8))
			c := g.issued(node)
			rc.Cert = &c
		}
		p = rc
	case MsgRegistrationApprove:
		ra := RegistrationApprove{ID: g.pick("r", 100), Cert: g.issued(g.pick("node", 30))}
		if r, ok := g.pending(); ok && g.chance(0.7) {
			ra.ID, ra.Cert.NodeID = r.ID, r.NodeID
		}
		p = ra
	case MsgRegistrationDeny:
		rd := RegistrationDeny{ID: g.pick("r", 100), Reason: g.pick("why", 2)}
		if r, ok := g.pending(); ok && g.chance(0.5) {
			rd.ID = r.ID
		}
		p = rd
	case MsgPolicySet:
		ps := PolicySet{Text: g.pick("policy", 4), ExpectVersion: uint64(g.r.IntN(6))}
		if g.chance(0.7) {
			ps.ExpectVersion = g.s.Policy().Version
		}
		p = ps
	case MsgRouteAuthPut:
		p = RouteAuthPut{Auth: RouteAuth{Prefix: fmt.Sprintf("10.%d.0.0/16", g.r.IntN(4)), Origins: []string{g.pick("node", 30)}, MaxLength: 14 + g.r.IntN(12), ASN: g.asn()}}
	case MsgRouteAuthDelete:
		p = RouteAuthDelete{Prefix: fmt.Sprintf("10.%d.0.0/16", g.r.IntN(4))}
	default:
		panic(fmt.Sprintf("no generator for %v", t))
	}
	return rawCommand(t, 1, g.now, p)
}

// TestRandomStreamsConverge applies one random command stream to a store
// and, from its snapshot taken halfway, to a second store; both must end
// with the same results, hash, snapshot bytes and query answers. Streams
// that differ (one command missing, one timestamp, shifted indexes) must
// end with different hashes.
func TestRandomStreamsConverge(t *testing.T) {
	seed := testSeed(t)
	t.Run("default history", func(t *testing.T) { randomStreams(t, seed, 0, 0) })
	// Few tombstones and a short journal: the floor rises and Changes
	// falls back to scanning, on both stores.
	t.Run("short history", func(t *testing.T) { randomStreams(t, seed, 4, 16) })
}

func randomStreams(t *testing.T, seed uint64, tombLimit, journalLimit int) {
	const n = 3000
	newStore := func() *Store {
		s := New()
		if tombLimit > 0 {
			s.tombLimit, s.journalLimit = tombLimit, journalLimit
		}
		return s
	}
	a := newStore()
	g := &cmdGen{r: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), now: t0, s: a}
	stream := make([][]byte, n)
	acceptedByType := map[MsgType]int{}
	results := make([]Result, n)
	apply := func(s *Store, i int) Result {
		return s.Apply(uint64(i+1), stream[i])
	}
	half := n / 2
	var sn *Snapshot
	lastMutating, lastRevoke, accepted := -1, -1, 0
	for i := range stream {
		if i == half {
			var err error
			if sn, err = a.Snapshot(); err != nil {
				t.Fatal(err)
			}
		}
		stream[i] = g.next()
		before := ""
		if i >= n-200 {
			before = a.Hash()
		}
		results[i] = apply(a, i)
		if results[i].Err == nil {
			accepted++
			acceptedByType[results[i].Type]++
		}
		if before != "" && a.Hash() != before {
			lastMutating = i
		}
	}
	t.Logf("%d of %d commands accepted; %d revocations, %d nodes, %d issued at the end",
		accepted, n, a.RevocationCount(), len(a.Nodes()), len(a.IssuedList()))
	if accepted < n/5 || accepted > n*9/10 {
		t.Fatalf("generator is off: %d of %d accepted", accepted, n)
	}
	t.Logf("accepted by type: %v", acceptedByType)
	for typ := MsgType(1); typ < msgTypeEnd; typ++ {
		if typ.Known() && acceptedByType[typ] == 0 {
			t.Errorf("no %v command was accepted: the generator misses that path", typ)
		}
	}

	// The snapshot was written after the second half was applied to a,
	// and must still hold the state at half.
	var buf bytes.Buffer
	if _, err := sn.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	sn.Release()
	b := newStore()
	if err := b.Restore(&buf); err != nil {
		t.Fatal(err)
	}
	if b.Index() != uint64(half) {
		t.Fatalf("restored index %d, want %d", b.Index(), half)
	}
	atHalf := viewOf(b)
	if tombLimit > 0 && (a.st.tombFloor == 0 || a.journalFloor == 0) {
		t.Fatalf("short history did not trim: tomb floor %d, journal floor %d", a.st.tombFloor, a.journalFloor)
	}
	for i := half; i < n; i++ {
		res := apply(b, i)
		if ErrorCode(res.Err) != ErrorCode(results[i].Err) || res.Ignored != results[i].Ignored {
			t.Fatalf("command %d (%v): result %v on the restored store, %v on the original", i+1, res.Type, res.Err, results[i].Err)
		}
	}
	if a.Hash() != b.Hash() {
		t.Fatal("hashes differ")
	}
	if !bytes.Equal(snapshotBytes(t, a), snapshotBytes(t, b)) {
		t.Fatal("snapshots differ")
	}
	if !reflect.DeepEqual(viewOf(a), viewOf(b)) {
		t.Fatal("query answers differ")
	}
	for _, since := range []uint64{0, uint64(half) - 1, uint64(half), uint64(n) - 100} {
		ca, cb := a.Changes(since), b.Changes(since)
		if !ca.Reset && !cb.Reset && !reflect.DeepEqual(ca, cb) {
			t.Fatalf("Changes(%d) differ:\n%+v\n%+v", since, ca, cb)
		}
	}
	checkChangesAgainstViews(t, a.Changes(uint64(half)), atHalf, viewOf(a))

	// TableIndex: exact on a (nothing of the table changed after it, the
	// command at it changed the table); on b, restored at half, never
	// below a's, never above the index, and exact for a table that
	// changed after half.
	for _, tbl := range tableNames {
		ia, ib := a.TableIndex(tbl), b.TableIndex(tbl)
		if ib < ia || ib > uint64(n) || (ia > uint64(half) && ib != ia) {
			t.Fatalf("%s: TableIndex %d on the original, %d on the restored store", tbl, ia, ib)
		}
		if c := a.Changes(ia); !c.Reset && len(c.Table(tbl).Put)+len(c.Table(tbl).Deleted) != 0 {
			t.Fatalf("%s changed after its TableIndex %d: %+v", tbl, ia, c.Table(tbl))
		}
		if c := a.Changes(ia - 1); ia > 0 && !c.Reset && len(c.Table(tbl).Put)+len(c.Table(tbl).Deleted) == 0 {
			t.Fatalf("%s did not change at its TableIndex %d", tbl, ia)
		}
	}

	// Diverging streams.
	replay := func(skip int, shift uint64, edit func(i int, data []byte) []byte) string {
		s := newStore()
		for i := range stream {
			if i == skip {
				continue
			}
			data := stream[i]
			if edit != nil {
				data = edit(i, data)
			}
			s.Apply(uint64(i+1)+shift, data)
		}
		return s.Hash()
	}
	// The last revocation still held: its time is in the state.
	for i := n - 1; i >= 0 && lastRevoke < 0; i-- {
		if results[i].Type != MsgRevoke || results[i].Err != nil {
			continue
		}
		env, _ := Decode(stream[i])
		var rv Revoke
		if err := json.Unmarshal(env.Payload, &rv); err != nil {
			t.Fatal(err)
		}
		if _, ok := a.Revoked(rv.Revocation.Kind, rv.Revocation.ID); ok {
			lastRevoke = i
		}
	}
	if replay(-1, 0, nil) != a.Hash() {
		t.Fatal("replaying the same stream gives another hash")
	}
	if lastMutating < 0 {
		t.Fatal("no state change in the last 200 commands")
	}
	if replay(lastMutating, 0, nil) == a.Hash() {
		t.Fatalf("dropping command %d did not change the hash", lastMutating+1)
	}
	if replay(-1, 1, nil) == a.Hash() {
		t.Fatal("shifting every index did not change the hash")
	}
	retimed := replay(-1, 0, func(i int, data []byte) []byte {
		if i != lastRevoke {
			return data
		}
		env, err := Decode(data)
		if err != nil {
			t.Fatal(err)
		}
		out := fmt.Appendf([]byte{byte(env.Type)}, `{"v":%d,"ts":%d,"p":%s}`, env.Version, env.Time.UnixNano()+1, env.Payload)
		return out
	})
	if lastRevoke < 0 || retimed == a.Hash() {
		t.Fatalf("changing the time of revocation command %d did not change the hash", lastRevoke+1)
	}
}

// checkChangesAgainstViews checks Changes(since) against the views at
// since and now: every record modified after since is in Put, every record
// gone since then is in Deleted (unless Reset), and nothing is in both.
func checkChangesAgainstViews(t *testing.T, c Changes, then, now view) {
	t.Helper()
	index := func(v view) map[Table]map[string]uint64 {
		m := map[Table]map[string]uint64{}
		add := func(tbl Table, k string, mod uint64) {
			if m[tbl] == nil {
				m[tbl] = map[string]uint64{}
			}
			m[tbl][k] = mod
		}
		for _, r := range v.Servers {
			add(TableServers, r.Name, r.ModifyIndex)
		}
		for _, r := range v.CAs {
			add(TableCAs, r.Network, r.ModifyIndex)
		}
		for _, r := range v.Issuers {
			add(TableIssuers, r.ID, r.ModifyIndex)
		}
		for _, r := range v.Tokens {
			add(TableJoinTokens, r.Hash, r.ModifyIndex)
		}
		for _, r := range v.Revocations {
			add(TableRevocations, string(r.Kind)+":"+r.ID, r.ModifyIndex)
		}
		for _, r := range v.Anchors {
			add(TableTrustAnchors, r.Network, r.ModifyIndex)
		}
		for _, r := range v.Nodes {
			add(TableNodes, r.ID, r.ModifyIndex)
		}
		for _, r := range v.Issued {
			add(TableIssued, r.Issuer+"/"+r.Serial, r.ModifyIndex)
		}
		for _, r := range v.JWKS {
			add(TableJWKS, r.KID, r.ModifyIndex)
		}
		for _, r := range v.Registrations {
			add(TableRegistrations, r.ID, r.ModifyIndex)
		}
		if v.Policy.ModifyIndex > 0 {
			add(TablePolicy, policyKey, v.Policy.ModifyIndex)
		}
		for _, r := range v.Routes {
			add(TableRouteAuths, r.Prefix, r.ModifyIndex)
		}
		return m
	}
	before, after := index(then), index(now)
	checked := 0
	for tbl := range after {
		tc := c.Table(tbl)
		put := map[string]bool{}
		for _, k := range tc.Put {
			put[k] = true
		}
		for k, mod := range after[tbl] {
			if (mod > c.Since) != put[k] {
				t.Errorf("%s %q: modified at %d, in Put = %v (since %d)", tbl, k, mod, put[k], c.Since)
			}
			checked++
		}
		for _, k := range tc.Deleted {
			if _, ok := after[tbl][k]; ok {
				t.Errorf("%s %q deleted but present", tbl, k)
			}
		}
	}
	for tbl := range before {
		del := map[string]bool{}
		for _, k := range c.Table(tbl).Deleted {
			del[k] = true
		}
		for k := range before[tbl] {
			if _, ok := after[tbl][k]; !ok && !del[k] && !c.Reset {
				t.Errorf("%s %q gone but not in Deleted", tbl, k)
			}
		}
	}
	if checked == 0 {
		t.Fatal("nothing checked")
	}
}
