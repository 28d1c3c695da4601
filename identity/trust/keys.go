package trust

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/keymesh/keymesh/fsm"
	"github.com/keymesh/keymesh/identity"
)

// ErrUnknownKey is returned by Keys for a kid not in the JWKS. It matches
// identity.ErrUnknownKey, so a Verifier refreshes once on it.
var ErrUnknownKey = fmt.Errorf("trust: %w", identity.ErrUnknownKey)

// Keys adapts a View to the identity package's KeySource and
// RevocationSource. View is called on every lookup (a root's live replica,
// an agent's current State). Parsed keys are cached by kid and the
// record's modify index.
type Keys struct {
	View func() View

	mu    sync.Mutex
	cache map[string]cachedKey
}

type cachedKey struct {
	modify uint64
	sum    [32]byte // of a federated key's JWK
	key    identity.Key
}

var (
	_ identity.KeySource        = (*Keys)(nil)
	_ identity.RevocationSource = (*Keys)(nil)
)

// Key returns the key with kid: its public key and chain from the JWKS, its
// state and dates, and the principals its owner may claim (a node's
// principal; ADMIN for a root server's admin credential).
func (t *Keys) Key(kid string) (identity.Key, error) {
	st := t.View()
	rec, ok := st.JWK(kid)
	if !ok {
		return t.federated(st, kid)
	}
	t.mu.Lock()
	c, hit := t.cache[kid]
	t.mu.Unlock()
	key := c.key
	if !hit || c.modify != rec.ModifyIndex {
		var j identity.JWK
		if err := json.Unmarshal(rec.Key, &j); err != nil {
			return identity.Key{}, fmt.Errorf("trust: JWKS entry %s: %w", kid, err)
		}
		k, err := identity.KeyFromJWK(j)
		if err != nil {
			return identity.Key{}, fmt.Errorf("trust: JWKS entry %s: %w", kid, err)
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

// federated returns the key kid of a federated network's node: active,
// for its certificate's lifetime, with the node principal alone (a
// federated network's custodians and admins are not ours). Its chain is
// the verifier's to check against that network's anchor.
func (t *Keys) federated(st View, kid string) (identity.Key, error) {
	network, fk, ok := st.FederatedKey(kid)
	if !ok {
		return identity.Key{}, fmt.Errorf("%w: %s", ErrUnknownKey, kid)
	}
	sum := sha256.Sum256(fk.Key)
	cacheKey := "federated\x00" + kid
	t.mu.Lock()
	c, hit := t.cache[cacheKey]
	t.mu.Unlock()
	key := c.key
	if !hit || c.sum != sum {
		var j identity.JWK
		if err := json.Unmarshal(fk.Key, &j); err != nil {
			return identity.Key{}, fmt.Errorf("trust: federated key %s of %s: %w", kid, network, err)
		}
		k, err := identity.KeyFromJWK(j)
		if err != nil {
			return identity.Key{}, fmt.Errorf("trust: federated key %s of %s: %w", kid, network, err)
		}
		if k.KID != kid || len(k.Chain) == 0 {
			return identity.Key{}, fmt.Errorf("trust: federated key %s of %s: kid %q, %d certificate(s)", kid, network, k.KID, len(k.Chain))
		}
		key = k
		t.mu.Lock()
		if t.cache == nil {
			t.cache = map[string]cachedKey{}
		}
		t.cache[cacheKey] = cachedKey{sum: sum, key: k}
		t.mu.Unlock()
	}
	key.Node = fk.Node
	key.State = identity.KeyActive
	key.NotAfter, key.RetiringSince = key.Chain[0].NotAfter, time.Time{}
	key.Principals = []identity.Principal{identity.PrincipalNode}
	return key, nil
}

// Revoked answers for jti, kid, certificate serial and node id.
func (t *Keys) Revoked(kind, id string) bool {
	_, ok := t.View().Revoked(fsm.RevocationKind(kind), id)
	return ok
}

// Anchors turns the trust anchors of v into the identity package's: roots
// per network and the access list of network's own anchor (network alone
// when it has none).
func Anchors(v View, network string) (identity.TrustAnchors, error) {
	a := identity.TrustAnchors{Roots: map[string][]*x509.Certificate{}}
	for _, ta := range v.TrustAnchors() {
		for _, der := range ta.Roots {
			c, err := x509.ParseCertificate(der)
			if err != nil {
				return a, fmt.Errorf("trust: trust anchor of %s: %w", ta.Network, err)
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

// Exclusive reports whether network's anchor in v requires exclusive
// membership (fsm.TrustAnchor.Exclusive): the network's nodes refuse peers
// that are members of other networks too. False when v holds no anchor
// of network. Only a network's own anchor carries the flag (the state
// refuses it on a federated one), so ask it of the node's own network.
func Exclusive(v View, network string) bool {
	for _, a := range v.TrustAnchors() {
		if a.Network == network {
			return a.Exclusive
		}
	}
	return false
}
