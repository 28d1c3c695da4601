package fsm

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strconv"
	"testing"
	"time"
)

const testNetwork = "mainnet.example.net"

// t0 is the first command time of every test store.
var t0 = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// der returns a fake DER SEQUENCE carrying s (enough for the fsm, which
// only checks the outer tag).
func der(s string) []byte { return append([]byte{0x30, byte(len(s))}, s...) }

func hashOf(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// rawCommand builds a command without Encode's checks, so tests can hand
// Apply what a faulty or hostile proposer would.
func rawCommand(t MsgType, version uint16, ts time.Time, payload any) []byte {
	p, err := json.Marshal(payload)
	if err != nil {
		panic(err)
	}
	out := []byte{byte(t)}
	out = append(out, `{"v":`+strconv.Itoa(int(version))+`,"ts":`+strconv.FormatInt(ts.UnixNano(), 10)+`,"p":`...)
	out = append(out, p...)
	return append(out, '}')
}

// harness applies commands at increasing indexes, one second apart.
type harness struct {
	t   testing.TB
	s   *Store
	idx uint64
	now time.Time
}

func newHarness(t testing.TB) *harness {
	return &harness{t: t, s: New(), now: t0}
}

// raw applies data at the next index and the current time.
func (h *harness) raw(data []byte) Result {
	h.t.Helper()
	h.idx++
	res := h.s.Apply(h.idx, data)
	if res.Index != h.idx {
		h.t.Fatalf("result index %d, want %d", res.Index, h.idx)
	}
	if got := h.s.Index(); got != h.idx {
		h.t.Fatalf("store index %d after applying %d", got, h.idx)
	}
	return res
}

// apply applies a command at the next index, without Encode's checks.
func (h *harness) apply(typ MsgType, p any) Result {
	h.t.Helper()
	h.now = h.now.Add(time.Second)
	return h.raw(rawCommand(typ, 1, h.now, p))
}

// ok applies a command through Encode and fails the test if it is rejected.
func (h *harness) ok(typ MsgType, p any) Result {
	h.t.Helper()
	h.now = h.now.Add(time.Second)
	data, err := Encode(typ, h.now, p)
	if err != nil {
		h.t.Fatalf("encode %v: %v", typ, err)
	}
	res := h.raw(data)
	if res.Err != nil {
		h.t.Fatalf("apply %v: %v", typ, res.Err)
	}
	return res
}

// seed builds a small network: CA, two root servers with issuers, a node
// token, an active node with a certificate and a JWK.
func (h *harness) seed() {
	h.t.Helper()
	h.ok(MsgGenesis, Genesis{CA: CA{Network: testNetwork, Active: der("root"), SealedKey: []byte("sealed")}})
	for _, name := range []string{"root-1", "root-2"} {
		h.ok(MsgServerPut, ServerPut{Server: Server{Name: name, RaftAddr: name + ":7000", APIAddr: name + ":8443", Status: ServerVoter}})
		h.ok(MsgIssuerPut, IssuerPut{Issuer: Issuer{ID: name, Network: testNetwork, Cert: der(name), Status: IssuerActive}})
	}
	h.ok(MsgTrustAnchorPut, TrustAnchorPut{Anchor: TrustAnchor{Network: testNetwork, Roots: [][]byte{der("root")}, Accept: []string{testNetwork}}})
	h.ok(MsgJoinTokenCreate, JoinTokenCreate{Token: JoinToken{ID: "tok1", Hash: hashOf("secret-1"), Kind: TokenKindNode, Principal: PrincipalNode, Uses: 3, Expiry: t0.Add(time.Hour)}})
	h.ok(MsgJoinTokenCreate, JoinTokenCreate{Token: JoinToken{ID: "tokbound", Hash: hashOf("secret-bound"), Kind: TokenKindNode, NodeID: "node-b", Uses: 1, Expiry: t0.Add(time.Hour)}})
	h.ok(MsgJoinTokenCreate, JoinTokenCreate{Token: JoinToken{ID: "tokroot", Hash: hashOf("secret-root"), Kind: TokenKindRoot, Uses: 1, Expiry: t0.Add(time.Hour)}})
	h.ok(MsgRegistrationCreate, RegistrationCreate{
		Registration: Registration{ID: "reg-a", NodeID: "node-a", Network: testNetwork, Principal: PrincipalNode, CSR: der("csr-a"), DNSNames: []string{"node-a.mainnet.example.net"}},
		TokenHash:    hashOf("secret-1"),
		Cert:         &Issued{Issuer: "root-1", Serial: "a1", NodeID: "node-a", NotAfter: t0.Add(24 * time.Hour), Cert: der("cert-a1")},
	})
	h.ok(MsgRegistrationCreate, RegistrationCreate{
		Registration: Registration{ID: "reg-p", NodeID: "node-p", Network: testNetwork, Principal: PrincipalNode, CSR: der("csr-p")},
	})
	h.ok(MsgJWKPut, JWKPut{Key: JWK{KID: "kid-a", Key: json.RawMessage(`{"kty":"EC","crv":"P-256","x":"AA","y":"BB"}`), Node: "node-a", State: JWKActive}})
}
