package cluster

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/keymesh/keymesh/ca"
	"github.com/keymesh/keymesh/fsm"
	"github.com/keymesh/keymesh/identity"
)

// TrustState is the part of the replicated state a token verifier reads.
// *fsm.Store has these methods (root servers verify against their live
// replica); a TrustIndex has them too (node agents verify against the trust
// document they follow).
type TrustState interface {
	JWK(kid string) (fsm.JWK, bool)
	Node(id string) (fsm.Node, bool)
	Server(name string) (fsm.Server, bool)
	Revoked(kind fsm.RevocationKind, id string) (fsm.Revocation, bool)
	TrustAnchors() []fsm.TrustAnchor
}

var _ TrustState = (*fsm.Store)(nil)

// Why CheckChain refuses a certificate chain. Each wraps ErrRevoked.
var (
	// ErrRevoked is matched by the three errors below.
	ErrRevoked = errors.New("cluster: revoked")
	// ErrCertRevoked: a certificate of the chain, the leaf or an issuing
	// intermediate above it, is revoked.
	ErrCertRevoked error = revokedError("certificate")
	// ErrKeyRevoked: the leaf certificate's key is revoked (by its kid).
	ErrKeyRevoked error = revokedError("key")
	// ErrNodeRevoked: the node the leaf certificate names is revoked.
	ErrNodeRevoked error = revokedError("node")
)

// revokedError is one kind of revocation; errors.Is matches it and
// ErrRevoked.
type revokedError string

func (e revokedError) Error() string        { return "cluster: " + string(e) + " revoked" }
func (e revokedError) Is(target error) bool { return target == ErrRevoked }

// CheckChain checks a verified certificate chain, leaf first, against the
// revocations of st: no certificate of it is revoked by serial (so a
// revoked issuing intermediate stops every certificate under it at once),
// the leaf's key is not revoked by its kid (every certificate carrying a
// revoked key fails), and the node a node certificate names is not
// revoked. Root servers run it on every client certificate and Raft peer;
// node agents on every peer.
func CheckChain(st TrustState, chain []*x509.Certificate) error {
	if len(chain) == 0 {
		return fmt.Errorf("%w: an empty chain", ErrCertRevoked)
	}
	for _, c := range chain {
		serial := fsm.FormatSerial(c.SerialNumber)
		if _, ok := st.Revoked(fsm.RevocationCert, serial); ok {
			what := "certificate"
			if c.IsCA {
				what = "issuing certificate"
			}
			return fmt.Errorf("%w: %s %s (%s)", ErrCertRevoked, what, serial, c.Subject.CommonName)
		}
	}
	leaf := chain[0]
	if kid, err := identity.Thumbprint(leaf.PublicKey); err == nil {
		if _, ok := st.Revoked(fsm.RevocationKey, kid); ok {
			return fmt.Errorf("%w: %s", ErrKeyRevoked, kid)
		}
	}
	if id, err := ca.IdentityOf(leaf); err == nil && id.Kind == ca.KindNode {
		if _, ok := st.Revoked(fsm.RevocationNode, id.Name); ok {
			return fmt.Errorf("%w: %s", ErrNodeRevoked, id.Name)
		}
		if n, ok := st.Node(id.Name); ok && n.Status == fsm.NodeRevoked {
			return fmt.Errorf("%w: %s", ErrNodeRevoked, id.Name)
		}
	}
	return nil
}

// ErrUnknownKey is returned by a TrustKeys source for a kid not in the JWKS.
// It matches identity.ErrUnknownKey, so a Verifier refreshes once on it.
var ErrUnknownKey = fmt.Errorf("cluster: %w", identity.ErrUnknownKey)

// TrustKeys adapts a TrustState to the identity package's KeySource and
// RevocationSource. Parsed keys are cached by kid and record index.
type TrustKeys struct {
	State func() TrustState

	mu    sync.Mutex
	cache map[string]cachedKey
}

type cachedKey struct {
	modify uint64
	key    identity.Key
}

var (
	_ identity.KeySource        = (*TrustKeys)(nil)
	_ identity.RevocationSource = (*TrustKeys)(nil)
)

// Key returns the key with kid: its public key and chain from the JWKS, its
// state and dates, and the principals its owner may claim (a node's
// principal; ADMIN for a root server's admin credential).
func (t *TrustKeys) Key(kid string) (identity.Key, error) {
	st := t.State()
	rec, ok := st.JWK(kid)
	if !ok {
		return identity.Key{}, fmt.Errorf("%w: %s", ErrUnknownKey, kid)
	}
	t.mu.Lock()
	c, hit := t.cache[kid]
	t.mu.Unlock()
	key := c.key
	if !hit || c.modify != rec.ModifyIndex {
		var j identity.JWK
		if err := json.Unmarshal(rec.Key, &j); err != nil {
			return identity.Key{}, fmt.Errorf("cluster: JWKS entry %s: %w", kid, err)
		}
		k, err := identity.KeyFromJWK(j)
		if err != nil {
			return identity.Key{}, fmt.Errorf("cluster: JWKS entry %s: %w", kid, err)
		}
		key = k
		t.mu.Lock()
		if t.cache == nil {
			t.cache = map[string]cachedKey{}
		}
		t.cache[kid] = cachedKey{modify: rec.ModifyIndex, key: k}
		t.mu.Unlock()
	}
	key.Node = rec.Node
	key.State = identity.KeyState(rec.State)
	key.NotAfter, key.RetiringSince = rec.NotAfter, rec.RetiringSince
	key.Principals = nil
	if n, ok := st.Node(rec.Node); ok && n.Status == fsm.NodeActive {
		key.Principals = []identity.Principal{identity.Principal(n.Principal)}
	} else if _, ok := st.Server(rec.Node); ok {
		key.Principals = []identity.Principal{identity.PrincipalAdmin}
	}
	return key, nil
}

// Revoked answers for jti, kid, certificate serial and node id.
func (t *TrustKeys) Revoked(kind, id string) bool {
	_, ok := t.State().Revoked(fsm.RevocationKind(kind), id)
	return ok
}

// Anchors turns the replicated trust anchors into the identity package's:
// roots per network and the access list of the own network's anchor.
func Anchors(st TrustState, network string) (identity.TrustAnchors, error) {
	a := identity.TrustAnchors{Roots: map[string][]*x509.Certificate{}}
	for _, ta := range st.TrustAnchors() {
		for _, der := range ta.Roots {
			c, err := x509.ParseCertificate(der)
			if err != nil {
				return a, fmt.Errorf("cluster: trust anchor of %s: %w", ta.Network, err)
			}
			a.Roots[ta.Network] = append(a.Roots[ta.Network], c)
		}
		if ta.Network == network {
			a.Accepted = append([]string(nil), ta.Accept...)
		}
	}
	if len(a.Accepted) == 0 {
		a.Accepted = []string{network}
	}
	return a, nil
}

// TrustIndex is a trust document (the answer of GET /v1/trust) indexed for
// look-ups; it implements TrustState.
type TrustIndex struct {
	doc     Trust
	jwks    map[string]fsm.JWK
	nodes   map[string]fsm.Node
	servers map[string]fsm.Server
	revs    map[string]fsm.Revocation
}

// NewTrustIndex indexes doc.
func NewTrustIndex(doc Trust) *TrustIndex {
	x := &TrustIndex{doc: doc, jwks: map[string]fsm.JWK{}, nodes: map[string]fsm.Node{}, servers: map[string]fsm.Server{}, revs: map[string]fsm.Revocation{}}
	for _, k := range doc.JWKS {
		x.jwks[k.KID] = k
	}
	for _, n := range doc.Nodes {
		x.nodes[n.ID] = n
	}
	for _, s := range doc.Servers {
		x.servers[s.Name] = s
	}
	for _, r := range doc.Revocations {
		x.revs[string(r.Kind)+"\x00"+r.ID] = r
	}
	return x
}

// Doc is the indexed trust document.
func (x *TrustIndex) Doc() Trust { return x.doc }

func (x *TrustIndex) JWK(kid string) (fsm.JWK, bool)        { k, ok := x.jwks[kid]; return k, ok }
func (x *TrustIndex) Node(id string) (fsm.Node, bool)       { n, ok := x.nodes[id]; return n, ok }
func (x *TrustIndex) Server(name string) (fsm.Server, bool) { s, ok := x.servers[name]; return s, ok }
func (x *TrustIndex) TrustAnchors() []fsm.TrustAnchor       { return x.doc.Anchors }
func (x *TrustIndex) Revoked(kind fsm.RevocationKind, id string) (fsm.Revocation, bool) {
	r, ok := x.revs[string(kind)+"\x00"+id]
	return r, ok
}

// nodeJWK is the JWKS entry of a certificate's key.
func nodeJWK(chain []*x509.Certificate) (*fsm.JWK, error) {
	j, err := identity.NewJWK(chain[0].PublicKey, chain)
	if err != nil {
		return nil, err
	}
	raw, err := json.Marshal(j)
	if err != nil {
		return nil, err
	}
	id, err := ca.IdentityOf(chain[0])
	if err != nil {
		return nil, err
	}
	return &fsm.JWK{KID: j.Kid, Key: raw, Node: id.Name, State: fsm.JWKActive, NotAfter: chain[0].NotAfter}, nil
}
