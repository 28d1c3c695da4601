package fsm

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// -update writes the golden files anew from goldenCommands: do it only to
// record commands appended at its end (a new command type: the recorded
// lines must come out byte for byte as they were, which git diff shows),
// or for a change that is meant to change what a recorded log means,
// which the versioning rule (doc.go) forbids once a release is out.
var update = flag.Bool("update", false, "write testdata/golden.* anew")

const (
	goldenLog      = "testdata/golden.log"
	goldenSnapshot = "testdata/golden.snapshot"
)

// goldenCommands is every command type as the proposers of this release
// build it, with the optional fields they set, and commands each type
// refuses; the golden log was recorded from it once.
func goldenCommands() []struct {
	t   MsgType
	p   any
	raw bool // built without Encode's checks (a refusal Encode would catch)
} {
	at := t0.Add(48 * time.Hour)
	key := json.RawMessage(`{"kty":"EC","crv":"P-256","x":"AA","y":"BB"}`)
	zero := uint64(0)
	exclusiveAt := uint64(38) // the index of the first ExclusiveSet below
	type cmd = struct {
		t   MsgType
		p   any
		raw bool
	}
	return []cmd{
		{t: MsgGenesis, p: Genesis{CA: CA{Network: testNetwork, Active: der("root"), SealedKey: []byte("sealed")},
			Issuer: &Issuer{ID: "r1", Network: testNetwork, Cert: der("issuer-r1"), Status: IssuerActive},
			Server: &Server{Name: "r1", RaftAddr: "10.0.0.1:8300", APIAddr: "10.0.0.1:8443", Status: ServerVoter},
			Anchor: &TrustAnchor{Network: testNetwork, Roots: [][]byte{der("root")}, Accept: []string{testNetwork}},
			Token:  &JoinToken{ID: "t-root", Hash: hashOf("root-secret"), Kind: TokenKindRoot, Uses: 1, Expiry: at},
			Key:    &JWK{KID: "kid-admin", Key: key, Node: "r1", State: JWKActive, NotAfter: at}}},
		{t: MsgGenesis, p: Genesis{CA: CA{Network: "other.example.net", Active: der("other"), SealedKey: []byte("sealed")}}}, // not the first command
		{t: MsgJoinTokenConsume, p: JoinTokenConsume{Hash: hashOf("root-secret"), Kind: TokenKindRoot, NodeID: "r2"}},
		{t: MsgJoinTokenConsume, p: JoinTokenConsume{Hash: hashOf("root-secret"), Kind: TokenKindRoot, NodeID: "r3"}}, // exhausted
		{t: MsgIssuerPut, p: IssuerPut{Issuer: Issuer{ID: "r2", Network: testNetwork, Cert: der("issuer-r2"), Status: IssuerActive}}},
		{t: MsgServerPut, p: ServerPut{Server: Server{Name: "r2", RaftAddr: "10.0.0.2:8300", APIAddr: "r2.mainnet.example.net:8443", Status: ServerJoining}}},
		{t: MsgJWKPut, p: JWKPut{Key: JWK{KID: "kid-admin-r2", Key: key, Node: "r2", State: JWKActive, NotAfter: at}}},
		{t: MsgJoinTokenCreate, p: JoinTokenCreate{Token: JoinToken{ID: "t-node", Hash: hashOf("node-secret"), Kind: TokenKindNode, Principal: PrincipalNode,
			Uses: 3, Expiry: at, Description: "edge", DNSNames: []string{"web.mainnet.example.net"}}}},
		{t: MsgRegistrationCreate, p: RegistrationCreate{
			Registration: Registration{ID: "reg-1", NodeID: "edge-1", Network: testNetwork, Principal: PrincipalNode, CSR: der("csr-1"),
				DNSNames: []string{"edge-1.mainnet.example.net", "web.mainnet.example.net"}, Source: "192.0.2.1"},
			TokenHash: hashOf("node-secret"), Cert: &Issued{Issuer: "r1", Serial: "a1", NodeID: "edge-1", NotAfter: at, Cert: der("cert-a1")},
			Key: &JWK{KID: "kid-edge-1", Key: key, Node: "edge-1", State: JWKActive, NotAfter: at}}},
		{t: MsgRegistrationCreate, p: RegistrationCreate{ // a name another node holds
			Registration: Registration{ID: "reg-2", NodeID: "edge-2", Network: testNetwork, Principal: PrincipalNode, CSR: der("csr-2"),
				DNSNames: []string{"web.mainnet.example.net"}}}},
		{t: MsgRegistrationCreate, p: RegistrationCreate{
			Registration: Registration{ID: "reg-3", NodeID: "edge-3", Network: testNetwork, Principal: PrincipalAdmin, CSR: der("csr-3"), Source: "192.0.2.7"},
			Limits:       &PendingLimits{Total: 10, PerSource: 1}}},
		{t: MsgRegistrationCreate, p: RegistrationCreate{ // over the limit per source
			Registration: Registration{ID: "reg-4", NodeID: "edge-4", Network: testNetwork, Principal: PrincipalNode, CSR: der("csr-4"), Source: "192.0.2.7"},
			Limits:       &PendingLimits{Total: 10, PerSource: 1}}},
		{t: MsgRegistrationApprove, p: RegistrationApprove{ID: "reg-3", Cert: Issued{Issuer: "r2", Serial: "b1", NodeID: "edge-3", NotAfter: at, Cert: der("cert-b1")},
			Key: &JWK{KID: "kid-edge-3", Key: key, Node: "edge-3", State: JWKActive}, Principal: PrincipalUser}},
		{t: MsgRegistrationCreate, p: RegistrationCreate{
			Registration: Registration{ID: "reg-5", NodeID: "edge-5", Network: testNetwork, Principal: PrincipalNode, CSR: der("csr-5")}}},
		{t: MsgRegistrationDeny, p: RegistrationDeny{ID: "reg-5", Reason: "unknown device"}},
		{t: MsgNodeCertRenew, p: NodeCertRenew{Cert: Issued{Issuer: "r1", Serial: "a2", NodeID: "edge-1", NotAfter: at, Cert: der("cert-a2")},
			Key: &JWK{KID: "kid-edge-1b", Key: key, Node: "edge-1", State: JWKActive}, Presented: "a1"}},
		{t: MsgNodeCertRenew, p: NodeCertRenew{Cert: Issued{Issuer: "r1", Serial: "a3", NodeID: "edge-1", NotAfter: at, Cert: der("cert-a3")}, Presented: "ff"}},
		{t: MsgRevoke, p: Revoke{Revocation: Revocation{Kind: RevocationToken, ID: "jti-1", Reason: "stolen", PruneAfter: at}}},
		{t: MsgRevoke, p: Revoke{Revocation: Revocation{Kind: RevocationCert, ID: "b1", PruneAfter: at}}},
		{t: MsgRevoke, p: Revoke{Revocation: Revocation{Kind: RevocationKey, ID: "kid-edge-3", PruneAfter: at}}},
		{t: MsgRevoke, p: Revoke{Revocation: Revocation{Kind: RevocationNode, ID: "edge-3", Reason: "decommissioned"}}},
		{t: MsgRevoke, p: Revoke{Revocation: Revocation{Kind: RevocationNode, ID: "edge-1", PruneAfter: at}}, raw: true}, // a node's revocation is kept for good
		{t: MsgJoinTokenRevoke, p: JoinTokenRevoke{ID: "t-node"}},
		{t: MsgPolicySet, p: PolicySet{Text: "permit (principal, action, resource);", ExpectVersion: 0}},
		{t: MsgPolicySet, p: PolicySet{Text: "forbid (principal, action, resource);", ExpectVersion: 0}}, // stale
		{t: MsgRouteAuthPut, p: RouteAuthPut{Auth: RouteAuth{Prefix: "10.20.0.0/16", Origins: []string{"edge-1"}, MaxLength: 24}, ExpectModifyIndex: &zero}},
		{t: MsgRouteAuthPut, p: RouteAuthPut{Auth: RouteAuth{Prefix: "10.20.0.0/16", Origins: []string{"edge-1", "edge-2"}, MaxLength: 24}, ExpectModifyIndex: &zero}}, // stale
		{t: MsgRouteAuthPut, p: RouteAuthPut{Auth: RouteAuth{Prefix: "2001:db8::/32", Origins: []string{"edge-1"}, MaxLength: 48}}},
		{t: MsgRouteAuthDelete, p: RouteAuthDelete{Prefix: "2001:db8::/32"}},
		{t: MsgTrustAnchorPut, p: TrustAnchorPut{Anchor: TrustAnchor{Network: "testnet.example.net", Roots: [][]byte{der("testnet-root")}}, ExpectModifyIndex: &zero}},
		{t: MsgTrustAnchorDelete, p: TrustAnchorDelete{Network: "testnet.example.net"}},
		{t: MsgTrustAnchorDelete, p: TrustAnchorDelete{Network: testNetwork}}, // the own network
		{t: MsgCAUpdate, p: CAUpdate{CA: CA{Network: testNetwork, Active: der("root"), SealedKey: []byte("resealed")}, ExpectModifyIndex: 1}},
		{t: MsgServerPut, p: ServerPut{Server: Server{Name: "r2", RaftAddr: "10.0.0.2:8300", APIAddr: "r2.mainnet.example.net:8443", Status: ServerVoter}}},
		{t: MsgServerRemove, p: ServerRemove{Name: "r2"}},
		{t: MsgIssuerPut, p: IssuerPut{Issuer: Issuer{ID: "r2", Network: testNetwork, Cert: der("issuer-r2"), Status: IssuerRevoked}}},
		{t: MsgPruneRevocations, p: PruneRevocations{Issuance: true}},
		// Exclusive membership, recorded after the first release: appended,
		// so that every command above applies as it did. The own anchor was
		// made by the genesis (index 1); it ends as it was, not exclusive.
		{t: MsgExclusiveSet, p: ExclusiveSet{Network: testNetwork, Exclusive: true, ExpectModifyIndex: 1}},
		// stale; not the own network; a federated anchor exclusive
		{t: MsgExclusiveSet, p: ExclusiveSet{Network: testNetwork, ExpectModifyIndex: 1}},
		{t: MsgExclusiveSet, p: ExclusiveSet{Network: "testnet.example.net", Exclusive: true}},
		{t: MsgTrustAnchorPut, p: TrustAnchorPut{Anchor: TrustAnchor{Network: "testnet.example.net", Roots: [][]byte{der("testnet-root")}, Exclusive: true}}},
		// the own record written whole (as trust add writes it), exclusive kept
		{t: MsgTrustAnchorPut, p: TrustAnchorPut{Anchor: TrustAnchor{Network: testNetwork, Roots: [][]byte{der("root")}, Accept: []string{testNetwork},
			Exclusive: true}, ExpectModifyIndex: &exclusiveAt}},
		{t: MsgExclusiveSet, p: ExclusiveSet{Network: testNetwork, ExpectModifyIndex: exclusiveAt + 4}},
	}
}

// goldenEntry is one line of the golden log: the index, what Apply
// answered (ok or a rejection's code), the type for readers, and the
// command as it is in a Raft log (base64).
func goldenLine(index uint64, res Result, data []byte) string {
	code := "ok"
	if res.Err != nil {
		code = ErrorCode(res.Err)
	}
	return fmt.Sprintf("%d %s %s %s", index, MsgType(data[0]), code, base64.StdEncoding.EncodeToString(data))
}

// TestGoldenLog holds the versioning rule: the log recorded in
// testdata/golden.log (every command type, with the fields of this
// release, and refusals) applies as it did when it was recorded, command
// by command, to the same state hash and the same snapshot bytes. A
// change of what a recorded command means fails here; it must come as a
// new field or a new payload version instead (doc.go).
func TestGoldenLog(t *testing.T) {
	if *update {
		writeGolden(t)
	}
	f, err := os.Open(goldenLog)
	if err != nil {
		t.Fatalf("%v (record it with go test ./fsm -run TestGoldenLog -update)", err)
	}
	defer f.Close()
	s := New()
	var wantHash string
	seen := map[MsgType]bool{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if h, ok := strings.CutPrefix(line, "# state hash "); ok {
			// A checkpoint: the state so far (the last line, the end).
			if got := s.Hash(); got != h {
				t.Fatalf("state hash %s before line %q, recorded %s", got, line, h)
			}
			wantHash = h
			continue
		}
		if line == "" || line[0] == '#' {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) != 4 {
			t.Fatalf("bad golden line %q", line)
		}
		index, err := strconv.ParseUint(fields[0], 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		data, err := base64.StdEncoding.DecodeString(fields[3])
		if err != nil {
			t.Fatal(err)
		}
		res := s.Apply(index, data)
		if got := goldenLine(index, res, data); got != line {
			t.Fatalf("the recorded command at index %d applies differently now:\n recorded %s\n now      %s (%v)", index, fields[2], strings.Fields(got)[2], res.Err)
		}
		seen[MsgType(data[0])] = true
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	for typ := MsgType(1); typ < msgTypeEnd; typ++ {
		if typ.Known() && !seen[typ] {
			t.Errorf("the golden log holds no %v command: record one", typ)
		}
	}
	if got := s.Hash(); got != wantHash {
		t.Fatalf("state hash %s, recorded %s", got, wantHash)
	}
	snap, err := os.ReadFile(goldenSnapshot)
	if err != nil {
		t.Fatal(err)
	}
	if got := snapshotBytes(t, s); !bytes.Equal(got, snap) {
		t.Fatalf("the snapshot of the golden state is %d bytes and differs from %s (%d bytes): the snapshot format changed; bump snapshotVersion and keep reading this one",
			len(got), goldenSnapshot, len(snap))
	}
	again := New()
	if err := again.Restore(bytes.NewReader(snap)); err != nil || again.Hash() != wantHash {
		t.Fatalf("the golden snapshot restores to %v, %v", again.Hash(), err)
	}
	// The indexes the store keeps beside the state, kept up command by
	// command, are what a restore builds from the state alone.
	if len(s.nodeKeys) == 0 {
		t.Fatal("the golden log left no node keys to index")
	}
	if !maps.EqualFunc(s.nodeKeys, again.nodeKeys, maps.Equal) {
		t.Fatalf("node key index kept by Apply %v, built by Restore %v", s.nodeKeys, again.nodeKeys)
	}
}

// goldenCheckpoints are the indexes after which the golden log records
// the state hash besides at its end: where each release's commands end
// (a later release appends commands; its checkpoint is kept).
var goldenCheckpoints = []uint64{37}

// writeGolden records goldenCommands as the golden log and snapshot.
func writeGolden(t *testing.T) {
	t.Helper()
	var b strings.Builder
	b.WriteString("# The golden log of keymesh's replicated state (fsm/golden_test.go): index, type, what Apply answered, command.\n")
	b.WriteString("# Recorded once; it must apply the same way forever after.\n")
	s := New()
	for i, c := range goldenCommands() {
		ts := t0.Add(time.Duration(i) * time.Second)
		data, err := Encode(c.t, ts, c.p)
		if c.raw {
			data, err = rawCommand(c.t, 1, ts, c.p), nil
		}
		if err != nil {
			t.Fatalf("encode %v: %v", c.t, err)
		}
		idx := uint64(i + 1)
		b.WriteString(goldenLine(idx, s.Apply(idx, data), data) + "\n")
		if slices.Contains(goldenCheckpoints, idx) {
			b.WriteString("# state hash " + s.Hash() + "\n")
		}
	}
	b.WriteString("# state hash " + s.Hash() + "\n")
	if err := os.WriteFile(goldenLog, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(goldenSnapshot, snapshotBytes(t, s), 0o644); err != nil {
		t.Fatal(err)
	}
}
