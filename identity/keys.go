package identity

import (
	"context"
	"crypto"
	"crypto/x509"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"
)

// KeyState is the life-cycle state of a key in the replicated JWKS.
type KeyState string

const (
	// KeyStaged: published ahead of use; tokens signed by it are refused.
	KeyStaged KeyState = "staged"
	// KeyActive: the key its node signs with.
	KeyActive KeyState = "active"
	// KeyRetiring: the node's previous key after a rotation. Tokens it signed
	// keep verifying until they expire; tokens issued after RetiringSince are
	// refused.
	KeyRetiring KeyState = "retiring"
)

// Key is a verification key as a verifier needs it: one entry of the
// replicated JWKS joined with its owner's record.
type Key struct {
	// KID is the key's RFC 7638 thumbprint.
	KID string
	// Public is the public key (ECDSA P-256/P-384 or Ed25519).
	Public crypto.PublicKey
	// Chain is the key's certificate chain from x5c, leaf first. The leaf
	// must hold Public and carry the owner's SPIFFE ID.
	Chain []*x509.Certificate
	// Node is the owner's id: the name in its SPIFFE ID.
	Node string
	// State is staged, active or retiring.
	State KeyState
	// NotAfter is the key's end of life in the JWKS (zero: the leaf's
	// NotAfter alone applies). Tokens must not outlive it.
	NotAfter time.Time
	// RetiringSince is when the key became retiring (zero: unknown, no limit
	// on iat besides NotAfter).
	RetiringSince time.Time
	// Principals are the principals the owner may claim in its tokens. A
	// token claiming any other is refused; an empty list refuses all.
	Principals []Principal
}

// KeyFromJWK fills KID, Public and Chain from a JWK (x5c required); the
// caller sets Node, State, NotAfter and Principals from the replicated state.
func KeyFromJWK(j JWK) (Key, error) {
	pub, err := j.PublicKey()
	if err != nil {
		return Key{}, err
	}
	if j.Kid != thumbprint(j.Kty, j.Crv, j.X, j.Y) {
		return Key{}, fmt.Errorf("%w: kid is not the key thumbprint", ErrInvalidJWK)
	}
	chain, err := j.Certificates()
	if err != nil {
		return Key{}, err
	}
	if len(chain) == 0 {
		return Key{}, fmt.Errorf("%w: x5c is required", ErrInvalidJWK)
	}
	return Key{KID: j.Kid, Public: pub, Chain: chain}, nil
}

// JWK returns the public JWK of the key, with x5c.
func (k Key) JWK() (JWK, error) { return NewJWK(k.Public, k.Chain) }

// KeySource finds verification keys by kid. Key must return an error
// wrapping ErrUnknownKey when it holds no such key; a Verifier then asks an
// optional Refresher. Implementations must be safe for concurrent use and
// fast (a map lookup): Key is called on every uncached verification.
type KeySource interface {
	Key(kid string) (Key, error)
}

// Refresher is the optional extra of a KeySource that can fetch the trust
// state again (e.g. a node agent asking its roots). A Verifier calls it once
// when it meets an unknown kid, at most once per VerifierConfig.RefreshCooldown.
type Refresher interface {
	Refresh(ctx context.Context) error
}

// Revocation kinds, as RevocationSource.Revoked receives them.
const (
	RevokeToken = "token" // id: the token's jti
	RevokeKey   = "key"   // id: the key's kid
	RevokeCert  = "cert"  // id: SerialHex of a certificate of the key's chain
	RevokeNode  = "node"  // id: the owner's node id (SPIFFE ID name)
)

// RevocationSource answers whether something is revoked. It is called on
// every verification, cached or not, so it must be fast and safe for
// concurrent use.
type RevocationSource interface {
	Revoked(kind, id string) bool
}

// SerialHex is the form of a certificate serial in revocations: lower-case
// hexadecimal without leading zeros.
func SerialHex(c *x509.Certificate) string {
	return strings.ToLower(c.SerialNumber.Text(16))
}

// TrustAnchors are the roots a Verifier accepts key chains under.
type TrustAnchors struct {
	// Roots holds, per network, that network's root certificates (active,
	// prepared and still-valid retired roots of its AS root CA).
	Roots map[string][]*x509.Certificate
	// Accepted is the access list: the networks whose members are accepted.
	// It must include the verifier's own network; a network not on it is
	// refused even if its roots are known.
	Accepted []string
}

func (a TrustAnchors) validate() error {
	for network, roots := range a.Roots {
		if err := CheckNetwork(network); err != nil {
			return fmt.Errorf("%w: anchors: %w", ErrInvalidConfig, err)
		}
		for i, r := range roots {
			if r == nil || !r.IsCA {
				return fmt.Errorf("%w: anchors: root %d of %s is not a CA certificate", ErrInvalidConfig, i, network)
			}
		}
	}
	for _, n := range a.Accepted {
		if err := CheckNetwork(n); err != nil {
			return fmt.Errorf("%w: anchors: access list: %w", ErrInvalidConfig, err)
		}
	}
	return nil
}

// anchorSet is the prepared form of TrustAnchors.
type anchorSet struct {
	pools    map[string]*x509.CertPool
	accepted map[string]bool
}

func newAnchorSet(a TrustAnchors) *anchorSet {
	s := &anchorSet{pools: make(map[string]*x509.CertPool), accepted: make(map[string]bool)}
	for network, roots := range a.Roots {
		p := x509.NewCertPool()
		for _, r := range roots {
			p.AddCert(r)
		}
		s.pools[network] = p
	}
	for _, n := range a.Accepted {
		s.accepted[n] = true
	}
	return s
}

// KeySet is an in-memory KeySource, safe for concurrent use: the form in
// which an agent holds its copy of the replicated JWKS.
type KeySet struct {
	mu   sync.RWMutex
	keys map[string]Key
}

// NewKeySet returns a KeySet holding keys.
func NewKeySet(keys ...Key) *KeySet {
	s := &KeySet{keys: make(map[string]Key, len(keys))}
	for _, k := range keys {
		s.keys[k.KID] = k
	}
	return s
}

// Key returns the key with kid, or an error wrapping ErrUnknownKey.
func (s *KeySet) Key(kid string) (Key, error) {
	s.mu.RLock()
	k, ok := s.keys[kid]
	s.mu.RUnlock()
	if !ok {
		return Key{}, fmt.Errorf("%w: %q", ErrUnknownKey, truncate(kid, 64))
	}
	return k, nil
}

// Put adds or replaces a key.
func (s *KeySet) Put(k Key) {
	s.mu.Lock()
	s.keys[k.KID] = k
	s.mu.Unlock()
}

// Remove deletes the key with kid.
func (s *KeySet) Remove(kid string) {
	s.mu.Lock()
	delete(s.keys, kid)
	s.mu.Unlock()
}

// Replace swaps in a whole new set of keys.
func (s *KeySet) Replace(keys []Key) {
	m := make(map[string]Key, len(keys))
	for _, k := range keys {
		m[k.KID] = k
	}
	s.mu.Lock()
	s.keys = m
	s.mu.Unlock()
}

// JWKS returns the public JWKS of the set, sorted by kid. It holds staged,
// active and retiring keys alike (a JWK carries no state); a server that
// wants third parties to see only usable keys filters before publishing.
func (s *KeySet) JWKS() (JWKS, error) {
	s.mu.RLock()
	keys := slices.Collect(maps.Values(s.keys))
	s.mu.RUnlock()
	out := JWKS{Keys: make([]JWK, 0, len(keys))}
	for _, k := range keys {
		j, err := k.JWK()
		if err != nil {
			return JWKS{}, fmt.Errorf("key %q: %w", k.KID, err)
		}
		out.Keys = append(out.Keys, j)
	}
	slices.SortFunc(out.Keys, func(a, b JWK) int { return strings.Compare(a.Kid, b.Kid) })
	return out, nil
}

// RevocationSet is an in-memory RevocationSource, safe for concurrent use.
type RevocationSet struct {
	mu sync.RWMutex
	m  map[revocation]struct{}
}

type revocation struct{ kind, id string }

// NewRevocationSet returns an empty set.
func NewRevocationSet() *RevocationSet {
	return &RevocationSet{m: make(map[revocation]struct{})}
}

// Revoke records kind+id as revoked. Remember to Invalidate verifiers that
// cache (they re-check revocations on cache hits anyway).
func (s *RevocationSet) Revoke(kind, id string) {
	s.mu.Lock()
	s.m[revocation{kind, id}] = struct{}{}
	s.mu.Unlock()
}

// Remove forgets a revocation (pruning once the revoked thing has expired).
func (s *RevocationSet) Remove(kind, id string) {
	s.mu.Lock()
	delete(s.m, revocation{kind, id})
	s.mu.Unlock()
}

// Revoked reports whether kind+id is revoked.
func (s *RevocationSet) Revoked(kind, id string) bool {
	s.mu.RLock()
	_, ok := s.m[revocation{kind, id}]
	s.mu.RUnlock()
	return ok
}
