package fsm

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func snapshotBytes(t testing.TB, s *Store) []byte {
	t.Helper()
	sn, err := s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer sn.Release()
	var buf bytes.Buffer
	n, err := sn.WriteTo(&buf)
	if err != nil || n != int64(buf.Len()) {
		t.Fatalf("WriteTo = %d, %v (wrote %d)", n, err, buf.Len())
	}
	return buf.Bytes()
}

// restoreFrom restores dst from a snapshot of src and checks the result.
func restoreFrom(t testing.TB, dst, src *Store) {
	t.Helper()
	if err := dst.Restore(bytes.NewReader(snapshotBytes(t, src))); err != nil {
		t.Fatalf("restore: %v", err)
	}
	if dst.Index() != src.Index() || dst.Hash() != src.Hash() {
		t.Fatalf("restored index %d hash %s, want %d %s", dst.Index(), dst.Hash(), src.Index(), src.Hash())
	}
}

// view is everything the queries show, to compare two stores.
type view struct {
	Network       string
	Servers       []Server
	CAs           []CA
	Issuers       []Issuer
	Tokens        []JoinToken
	Revocations   []Revocation
	Anchors       []TrustAnchor
	Nodes         []Node
	Issued        []Issued
	JWKS          []JWK
	Registrations []Registration
	Policy        Policy
	Routes        []RouteAuth
	TokenIDs      map[string]string
}

func viewOf(s *Store) view {
	v := view{
		Network: s.Network(), Servers: s.Servers(), CAs: s.CAs(), Issuers: s.Issuers(), Tokens: s.JoinTokens(),
		Revocations: s.Revocations(), Anchors: s.TrustAnchors(), Nodes: s.Nodes(), Issued: s.IssuedList(),
		JWKS: s.JWKS(), Registrations: s.Registrations(), Policy: s.Policy(), Routes: s.RouteAuths(),
		TokenIDs: map[string]string{},
	}
	for _, tok := range v.Tokens {
		byID, ok := s.JoinTokenByID(tok.ID)
		if !ok {
			v.TokenIDs[tok.ID] = "missing"
		} else {
			v.TokenIDs[tok.ID] = byID.Hash
		}
	}
	return v
}

// richHarness has something in every table, deletions and a policy.
func richHarness(t testing.TB) *harness {
	h := newHarness(t)
	h.seed()
	h.ok(MsgRevoke, Revoke{Revocation: Revocation{Kind: RevocationCert, ID: "a1", Reason: "superseded", PruneAfter: t0.Add(24 * time.Hour)}})
	h.ok(MsgRevoke, Revoke{Revocation: Revocation{Kind: RevocationToken, ID: "jti-1"}})
	h.ok(MsgPolicySet, PolicySet{Text: "permit(principal, action, resource);"})
	h.ok(MsgRouteAuthPut, RouteAuthPut{Auth: RouteAuth{Prefix: "10.0.0.0/8", Origins: []string{"node-a"}, MaxLength: 24}})
	h.ok(MsgTrustAnchorPut, TrustAnchorPut{Anchor: TrustAnchor{Network: "fed.example.org", Roots: [][]byte{der("fr")}, Accept: []string{"fed.example.org", testNetwork}}})
	h.ok(MsgCAUpdate, CAUpdate{CA: CA{Network: testNetwork, Active: der("root"), Prepared: [][]byte{der("next")}, CrossSigns: [][]byte{der("x1"), der("x2")}, SealedKey: []byte("sealed")}, ExpectModifyIndex: 1})
	h.ok(MsgRegistrationDeny, RegistrationDeny{ID: "reg-p", Reason: "no"})
	h.ok(MsgServerRemove, ServerRemove{Name: "root-2"})
	h.ok(MsgJoinTokenRevoke, JoinTokenRevoke{ID: "tokroot"})
	return h
}

func TestSnapshotRoundTrip(t *testing.T) {
	h := richHarness(t)
	data := snapshotBytes(t, h.s)
	r := New()
	if err := r.Restore(bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if r.Index() != h.s.Index() || r.Hash() != h.s.Hash() {
		t.Fatalf("index %d hash %s, want %d %s", r.Index(), r.Hash(), h.s.Index(), h.s.Hash())
	}
	if got, want := viewOf(r), viewOf(h.s); !reflect.DeepEqual(got, want) {
		t.Fatalf("restored view differs:\n got %+v\nwant %+v", got, want)
	}
	// Byte-identical snapshots, and the cached hash after Restore is the
	// recomputed one.
	if again := snapshotBytes(t, r); !bytes.Equal(again, data) {
		t.Fatal("snapshot of the restored store differs")
	}
	r.hash.Store(nil)
	if r.Hash() != h.s.Hash() {
		t.Fatal("recomputed hash differs")
	}
	// Both continue the same way.
	h2 := &harness{t: t, s: r, idx: h.idx, now: h.now}
	for _, x := range []*harness{h, h2} {
		x.ok(MsgJoinTokenConsume, JoinTokenConsume{Hash: hashOf("secret-1"), Kind: TokenKindNode, NodeID: "n9"})
		x.ok(MsgRevoke, Revoke{Revocation: Revocation{Kind: RevocationKey, ID: "kid-a"}})
	}
	if h.s.Hash() != r.Hash() {
		t.Fatal("hashes differ after the same commands")
	}
}

func TestSnapshotIsPointInTime(t *testing.T) {
	h := richHarness(t)
	wantHash, wantIdx := h.s.Hash(), h.s.Index()
	wantView := viewOf(h.s)
	sn, err := h.s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if sn.Index() != wantIdx {
		t.Fatalf("snapshot index %d", sn.Index())
	}
	// Change every table after the capture.
	h.ok(MsgServerPut, ServerPut{Server: Server{Name: "root-9", RaftAddr: "a:1", APIAddr: "a:2", Status: ServerJoining}})
	cur, _ := h.s.CA(testNetwork)
	h.ok(MsgCAUpdate, CAUpdate{CA: CA{Network: testNetwork, Active: der("root"), Prepared: [][]byte{der("b")}, SealedKey: []byte("k")}, ExpectModifyIndex: cur.ModifyIndex})
	h.ok(MsgIssuerPut, IssuerPut{Issuer: Issuer{ID: "root-1", Network: testNetwork, Cert: der("r1b"), Status: IssuerRevoked}})
	h.ok(MsgJoinTokenConsume, JoinTokenConsume{Hash: hashOf("secret-1"), Kind: TokenKindNode})
	h.ok(MsgJWKPut, JWKPut{Key: JWK{KID: "kid-a", Key: json.RawMessage(`{"kty":"EC","crv":"P-256","x":"AA","y":"BB"}`), Node: "node-a", State: JWKRetiring}})
	h.ok(MsgRevoke, Revoke{Revocation: Revocation{Kind: RevocationNode, ID: "node-a"}})
	h.ok(MsgTrustAnchorDelete, TrustAnchorDelete{Network: "fed.example.org"})
	h.ok(MsgRegistrationCreate, RegistrationCreate{Registration: Registration{ID: "reg-q", NodeID: "node-q", Network: testNetwork, Principal: PrincipalNode, CSR: der("q")},
		TokenHash: hashOf("secret-1"), Cert: &Issued{Issuer: "root-2", Serial: "ff", NodeID: "node-q", NotAfter: t0.Add(time.Hour), Cert: der("c")}})
	h.ok(MsgRegistrationCreate, RegistrationCreate{Registration: Registration{ID: "reg-z", NodeID: "z", Network: testNetwork, Principal: PrincipalUser, CSR: der("z")}})
	h.ok(MsgPolicySet, PolicySet{Text: "forbid", ExpectVersion: 1})
	h.ok(MsgRouteAuthDelete, RouteAuthDelete{Prefix: "10.0.0.0/8"})
	h.now = h.now.Add(48 * time.Hour)
	h.ok(MsgPruneRevocations, PruneRevocations{})

	var buf bytes.Buffer
	if _, err := sn.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	sn.Release()
	r := New()
	if err := r.Restore(&buf); err != nil {
		t.Fatal(err)
	}
	if r.Hash() != wantHash || r.Index() != wantIdx {
		t.Fatal("snapshot saw changes applied after it was taken")
	}
	if !reflect.DeepEqual(viewOf(r), wantView) {
		t.Fatal("restored view differs from the view at capture")
	}
	if h.s.Hash() == wantHash {
		t.Fatal("the live store did not change")
	}
}

func TestSnapshotRelease(t *testing.T) {
	h := newHarness(t)
	h.seed()
	sn, _ := h.s.Snapshot()
	sn2, _ := h.s.Snapshot()
	if got := h.s.st.nodes.refs.Load(); got != 2 {
		t.Fatalf("refs %d, want 2", got)
	}
	sn.Release()
	sn.Release() // idempotent
	if _, err := sn.WriteTo(io.Discard); !errors.Is(err, ErrReleased) {
		t.Fatalf("WriteTo after Release = %v", err)
	}
	sn2.Release()
	if got := h.s.st.nodes.refs.Load(); got != 0 {
		t.Fatalf("refs %d after release, want 0", got)
	}
	// With no snapshot left, a write does not copy the table.
	before := h.s.st.nodes.refs
	h.ok(MsgRevoke, Revoke{Revocation: Revocation{Kind: RevocationNode, ID: "node-a"}})
	if h.s.st.nodes.refs != before {
		t.Fatal("table copied with no snapshot holding it")
	}
}

type failingReader struct {
	data []byte
	err  error
}

func (f *failingReader) Read(p []byte) (int, error) {
	if len(f.data) == 0 {
		return 0, f.err
	}
	n := copy(p, f.data)
	f.data = f.data[n:]
	return n, nil
}

// TestRestoreRejectsBadSnapshots feeds Restore broken input: each must
// fail with a clear error and leave the store as it was.
func TestRestoreRejectsBadSnapshots(t *testing.T) {
	good := snapshotBytes(t, richHarness(t).s)
	target := newHarness(t)
	target.seed()
	hash, idx := target.s.Hash(), target.s.Index()
	unchanged := func(t *testing.T) {
		t.Helper()
		if target.s.Hash() != hash || target.s.Index() != idx {
			t.Fatal("failed restore changed the store")
		}
		target.s.hash.Store(nil)
		if target.s.Hash() != hash {
			t.Fatal("failed restore changed the state")
		}
	}
	flip := func(i int) []byte {
		b := bytes.Clone(good)
		b[i] ^= 0x01
		return b
	}
	cases := []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"magic only", []byte("KMFSM")},
		{"not a snapshot", []byte(`{"servers":[]}`)},
		{"future format", append([]byte{'K', 'M', 'F', 'S', 'M', snapshotVersion + 1}, good[6:]...)},
		{"format zero", append([]byte("KMFSM\x00"), good[6:]...)},
		{"trailing data", append(bytes.Clone(good), 0)},
		{"no trailer", good[:len(good)-32]},
		{"flipped index", flip(6)},
		{"flipped body", flip(len(good) / 2)},
		{"flipped trailer", flip(len(good) - 1)},
		{"huge count", append(append([]byte("KMFSM\x01\x05"), 0, 0, 0, 0, 0), 0xff, 0xff, 0xff, 0xff, 0x0f)},
		{"revocation key too long", longRevocationKey(t)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := target.s.Restore(bytes.NewReader(tc.data))
			if !errors.Is(err, ErrSnapshot) {
				t.Fatalf("err = %v, want ErrSnapshot", err)
			}
			unchanged(t)
		})
	}
	t.Run("every truncation", func(t *testing.T) {
		for n := 0; n < len(good); n++ {
			if err := target.s.Restore(bytes.NewReader(good[:n])); !errors.Is(err, ErrSnapshot) {
				t.Fatalf("truncated at %d: err = %v", n, err)
			}
		}
		unchanged(t)
	})
	t.Run("every flipped byte", func(t *testing.T) {
		for i := range good {
			if err := target.s.Restore(bytes.NewReader(flip(i))); err == nil {
				t.Fatalf("flipped byte %d accepted", i)
			}
		}
		unchanged(t)
	})
	t.Run("reader error", func(t *testing.T) {
		boom := errors.New("disk on fire")
		err := target.s.Restore(&failingReader{data: good[:len(good)/2], err: boom})
		if !errors.Is(err, boom) {
			t.Fatalf("err = %v, want the reader's", err)
		}
		unchanged(t)
	})
	// And the good one still works on the same store.
	if err := target.s.Restore(bytes.NewReader(good)); err != nil {
		t.Fatal(err)
	}
}

// TestGossipKeyringFormat: a state with a gossip keyring is written as
// format 3 and restores to the same keyring, writing the same bytes again;
// one without is written as format 2, byte for byte as before (the golden
// snapshot pins those bytes).
func TestGossipKeyringFormat(t *testing.T) {
	h := newHarness(t)
	s := h.s
	h.ok(MsgGenesis, Genesis{CA: CA{Network: testNetwork, Active: der("root"), SealedKey: []byte("sealed")}})
	if b := snapshotBytes(t, s); b[5] != 2 {
		t.Fatalf("a state without a keyring is written as format %d", b[5])
	}
	keys := []GossipKey{{ID: "g2", Sealed: []byte("sealed-g2"), State: GossipKeyPrimary, Since: t0}, {ID: "g1", Sealed: []byte("sealed-g1"), State: GossipKeyRetiring, Since: t0, After: 9}}
	h.ok(MsgCAUpdate, CAUpdate{CA: CA{Network: testNetwork, Active: der("root"), SealedKey: []byte("sealed"), GossipKeys: keys}, ExpectModifyIndex: 1})
	b := snapshotBytes(t, s)
	if b[5] != 3 {
		t.Fatalf("a state with a keyring is written as format %d", b[5])
	}
	again := New()
	if err := again.Restore(bytes.NewReader(b)); err != nil || again.Hash() != s.Hash() {
		t.Fatalf("format 3 round trip: %v", err)
	}
	if !bytes.Equal(snapshotBytes(t, again), b) {
		t.Fatal("the restored state writes other bytes (a field lost or changed)")
	}
	rec, _ := again.CA(testNetwork)
	if len(rec.GossipKeys) != 2 || rec.GossipKeys[1].ID != "g1" || !rec.GossipKeys[0].Since.Equal(t0) || string(rec.GossipKeys[0].Sealed) != "sealed-g2" || rec.GossipKeys[1].After != 9 {
		t.Fatalf("keyring %+v", rec.GossipKeys)
	}
}

// TestFederationFormat: a state whose anchors hold endpoints or
// federated keys is written as format 4 and reads back the same; one
// without them keeps the older format.
func TestFederationFormat(t *testing.T) {
	h := newHarness(t)
	s := h.s
	h.ok(MsgGenesis, Genesis{CA: CA{Network: testNetwork, Active: der("root"), SealedKey: []byte("sealed")}})
	h.ok(MsgTrustAnchorPut, TrustAnchorPut{Anchor: TrustAnchor{Network: "fed.example.org", Roots: [][]byte{der("fr")}}})
	if b := snapshotBytes(t, s); b[5] != 2 {
		t.Fatalf("a state with a plain federated anchor is written as format %d", b[5])
	}
	keys := []FederatedKey{{KID: "k1", Node: "f-1", Key: []byte(`{"kid":"k1"}`)}, {KID: "k2", Node: "f-2", Key: []byte(`{"kid":"k2"}`)}}
	h.ok(MsgTrustAnchorPut, TrustAnchorPut{Anchor: TrustAnchor{Network: "fed.example.org", Roots: [][]byte{der("fr")}, Endpoints: []string{"r1:8443", "r2:8443"}, Keys: keys}})
	b := snapshotBytes(t, s)
	if b[5] != 4 {
		t.Fatalf("a state with federated keys is written as format %d", b[5])
	}
	again := New()
	if err := again.Restore(bytes.NewReader(b)); err != nil || again.Hash() != s.Hash() {
		t.Fatalf("format 4 round trip: %v", err)
	}
	if !bytes.Equal(snapshotBytes(t, again), b) {
		t.Fatal("the restored state writes other bytes (a field lost or changed)")
	}
	a, _ := again.TrustAnchor("fed.example.org")
	if !slices.Equal(a.Endpoints, []string{"r1:8443", "r2:8443"}) || len(a.Keys) != 2 || a.Keys[1].Node != "f-2" || string(a.Keys[0].Key) != `{"kid":"k1"}` {
		t.Fatalf("anchor %+v", a)
	}
}

// TestASNFormat: a state without AS numbers is written in the format it
// was before format 5, byte for byte (TestGoldenLog pins those bytes and
// that hash); one with a network's or a route authorization's AS is
// written as format 5 and reads back the same.
func TestASNFormat(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  func(h *harness)
		ca   uint32
		auth uint32
	}{
		{name: "network", set: func(h *harness) {
			cur, _ := h.s.CA(testNetwork)
			cur.ASN = 64500
			h.ok(MsgCAUpdate, CAUpdate{CA: cur, ExpectModifyIndex: cur.ModifyIndex})
		}, ca: 64500},
		{name: "route authorization", set: func(h *harness) {
			h.ok(MsgRouteAuthPut, RouteAuthPut{Auth: RouteAuth{Prefix: "10.0.0.0/8", Origins: []string{"node-a"}, MaxLength: 24, ASN: 4200000000}})
		}, auth: 4200000000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := richHarness(t) // with a route authorization
			if b := snapshotBytes(t, h.s); b[5] != 2 {
				t.Fatalf("a state without AS numbers is written as format %d", b[5])
			}
			tc.set(h)
			b := snapshotBytes(t, h.s)
			if b[5] != 5 {
				t.Fatalf("a state with an AS number is written as format %d", b[5])
			}
			again := New()
			if err := again.Restore(bytes.NewReader(b)); err != nil || again.Hash() != h.s.Hash() {
				t.Fatalf("format 5 round trip: %v", err)
			}
			again.hash.Store(nil)
			if again.Hash() != h.s.Hash() {
				t.Fatal("the restored state hashes otherwise")
			}
			if !bytes.Equal(snapshotBytes(t, again), b) {
				t.Fatal("the restored state writes other bytes (a field lost or changed)")
			}
			if !reflect.DeepEqual(viewOf(again), viewOf(h.s)) {
				t.Fatal("restored view differs")
			}
			ca, _ := again.CA(testNetwork)
			auth, _ := again.RouteAuth("10.0.0.0/8")
			if ca.ASN != tc.ca || auth.ASN != tc.auth {
				t.Fatalf("restored AS numbers: network %d, 10.0.0.0/8 %d", ca.ASN, auth.ASN)
			}
		})
	}
	// Back to no AS number anywhere: the format and the bytes of before.
	h := richHarness(t)
	before := snapshotBytes(t, h.s)
	cur, _ := h.s.CA(testNetwork)
	cur.ASN = 64500
	h.ok(MsgCAUpdate, CAUpdate{CA: cur, ExpectModifyIndex: cur.ModifyIndex})
	cur, _ = h.s.CA(testNetwork)
	cur.ASN = 0
	h.ok(MsgCAUpdate, CAUpdate{CA: cur, ExpectModifyIndex: cur.ModifyIndex})
	if b := snapshotBytes(t, h.s); b[5] != before[5] {
		t.Fatalf("a state whose AS number was cleared is written as format %d, not %d", b[5], before[5])
	}
}

// snapshotV6 is testdata/snapshot-v6.bin: the rich harness's state with
// its own network's membership exclusive, as format 6 writes it (-update
// writes it anew).
const snapshotV6 = "testdata/snapshot-v6.bin"

// TestExclusiveFormat: a state whose own anchor is exclusive is written as
// format 6, byte for byte as testdata/snapshot-v6.bin pins it, and reads
// back the same; one without (also once the flag is cleared) keeps the
// older format, so it writes and hashes as before (TestGoldenLog pins
// those bytes). A format 6 snapshot whose federated anchor is exclusive
// is refused.
func TestExclusiveFormat(t *testing.T) {
	h := richHarness(t)
	before := snapshotBytes(t, h.s)
	if before[5] != 2 {
		t.Fatalf("a state without exclusive membership is written as format %d", before[5])
	}
	own, _ := h.s.TrustAnchor(testNetwork)
	h.ok(MsgExclusiveSet, ExclusiveSet{Network: testNetwork, Exclusive: true, ExpectModifyIndex: own.ModifyIndex})
	b := snapshotBytes(t, h.s)
	if b[5] != 6 {
		t.Fatalf("a state with exclusive membership is written as format %d", b[5])
	}
	if *update {
		if err := os.WriteFile(snapshotV6, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	pinned, err := os.ReadFile(snapshotV6)
	if err != nil {
		t.Fatalf("%v (write it with go test ./fsm -run TestExclusiveFormat -update)", err)
	}
	if !bytes.Equal(b, pinned) {
		t.Fatalf("format 6 writes %d bytes that differ from %s (%d bytes): the format changed; bump snapshotVersion and keep reading this one", len(b), snapshotV6, len(pinned))
	}
	again := New()
	if err := again.Restore(bytes.NewReader(pinned)); err != nil || again.Hash() != h.s.Hash() {
		t.Fatalf("format 6 round trip: %v", err)
	}
	again.hash.Store(nil)
	if again.Hash() != h.s.Hash() {
		t.Fatal("the restored state hashes otherwise")
	}
	if !bytes.Equal(snapshotBytes(t, again), b) {
		t.Fatal("the restored state writes other bytes (a field lost or changed)")
	}
	if !reflect.DeepEqual(viewOf(again), viewOf(h.s)) {
		t.Fatal("restored view differs")
	}
	if a, _ := again.TrustAnchor(testNetwork); !a.Exclusive {
		t.Fatalf("restored own anchor %+v", a)
	}
	if a, _ := again.TrustAnchor("fed.example.org"); a.Exclusive {
		t.Fatalf("restored federated anchor %+v", a)
	}

	// Cleared again: the format of before.
	own, _ = h.s.TrustAnchor(testNetwork)
	h.ok(MsgExclusiveSet, ExclusiveSet{Network: testNetwork, ExpectModifyIndex: own.ModifyIndex})
	if b := snapshotBytes(t, h.s); b[5] != before[5] {
		t.Fatalf("a state whose exclusive membership was cleared is written as format %d, not %d", b[5], before[5])
	}

	// A federated anchor exclusive, as no Apply makes it: corrupt.
	bad := richHarness(t)
	fed := bad.s.st.anchors.m["fed.example.org"]
	fed.Exclusive = true
	bad.s.st.anchors.mut()["fed.example.org"] = fed
	if err := New().Restore(bytes.NewReader(snapshotBytes(t, bad.s))); !errors.Is(err, ErrSnapshot) {
		t.Fatalf("a federated anchor exclusive restores: %v", err)
	}
}

// TestRestoreVersion1 reads a snapshot written by the version-1 format
// (testdata/snapshot-v1.bin: the seed state of the test harness, written
// by the code before version 2): every record is there, with the fields
// version 2 added empty, and it writes back as version 2.
func TestRestoreVersion1(t *testing.T) {
	b, err := os.ReadFile("testdata/snapshot-v1.bin")
	if err != nil {
		t.Fatal(err)
	}
	if b[5] != 1 {
		t.Fatalf("testdata/snapshot-v1.bin is format %d", b[5])
	}
	s := New()
	if err := s.Restore(bytes.NewReader(b)); err != nil {
		t.Fatal(err)
	}
	if n, ok := s.Node("node-a"); !ok || n.CertSerial != "a1" || n.DNSNames != nil {
		t.Fatalf("node-a %+v", n)
	}
	if r, ok := s.Registration("reg-a"); !ok || len(r.DNSNames) != 1 || r.Source != "" {
		t.Fatalf("reg-a %+v", r)
	}
	if _, ok := s.PendingRegistration("node-p"); !ok {
		t.Fatal("the pending registration of node-p is not indexed")
	}
	if len(s.JoinTokens()) != 3 || s.Index() == 0 {
		t.Fatalf("tokens %d index %d", len(s.JoinTokens()), s.Index())
	}
	sn, err := s.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if _, err := sn.WriteTo(&out); err != nil {
		t.Fatal(err)
	}
	if out.Bytes()[5] != 2 { // the oldest format that holds it
		t.Fatalf("written as format %d", out.Bytes()[5])
	}
	again := New()
	if err := again.Restore(&out); err != nil || again.Hash() != s.Hash() {
		t.Fatalf("v2 round trip: %v", err)
	}
}

// longRevocationKey is a well-formed snapshot holding a revocation whose key
// is longer than a record can hold (no Apply makes one).
func longRevocationKey(t *testing.T) []byte {
	h := richHarness(t)
	h.s.st.revs.mut().add("n"+strings.Repeat("x", maxRevKeyLen), revRec{index: 1})
	return snapshotBytes(t, h.s)
}
