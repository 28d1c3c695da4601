package identity

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// VerifierConfig configures a Verifier. Keys and Revocations are required.
type VerifierConfig struct {
	// Keys finds keys by kid (the replicated JWKS). If it also implements
	// Refresher, an unknown kid triggers one refresh per RefreshCooldown.
	Keys KeySource
	// Revocations answers for jti, kid, certificate serial and node id.
	Revocations RevocationSource
	// Anchors are the initial trust anchors; change them with SetAnchors.
	Anchors TrustAnchors
	// Audience lists the names this verifier answers to; a token must name at
	// least one. VerifyRequest.Audience overrides it per call.
	Audience []string
	// Skew is the clock skew tolerated on exp, nbf and iat. Default 30 s.
	Skew time.Duration
	// MaxTokenSize bounds a token's length in bytes. Default 8 KiB.
	MaxTokenSize int
	// CacheSize bounds the cache of verified tokens (entries). Default 10000;
	// negative disables the cache.
	CacheSize int
	// RefreshCooldown is the least time between two refreshes of Keys.
	// Default 10 s.
	RefreshCooldown time.Duration
	// Clock returns the current time; nil means time.Now.
	Clock func() time.Time
}

func (c *VerifierConfig) validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: verifier: %s", ErrInvalidConfig, fmt.Sprintf(format, args...))
	}
	if c.Keys == nil {
		return bad("Keys is required")
	}
	if c.Revocations == nil {
		return bad("Revocations is required")
	}
	if c.Skew < 0 || c.RefreshCooldown < 0 {
		return bad("durations must not be negative")
	}
	if c.Skew > 10*time.Minute {
		return bad("Skew %v is more than 10 minutes", c.Skew)
	}
	if c.MaxTokenSize < 0 {
		return bad("MaxTokenSize must not be negative")
	}
	return c.Anchors.validate()
}

// VerifyRequest is one token to verify, with what it was presented with.
type VerifyRequest struct {
	// Token is the compact JWS.
	Token string
	// Audience, if set, replaces VerifierConfig.Audience for this call.
	Audience []string
	// PeerCert is the certificate the token was presented with (the peer's
	// TLS certificate). A bound token (cnf) must match it; a bound token with
	// no PeerCert is refused.
	PeerCert *x509.Certificate
	// RequireBinding refuses unbound tokens (peering requires bound tokens).
	RequireBinding bool
}

// Verified is a token that passed every check.
type Verified struct {
	Claims Claims
	// Node is the minting node's id (the name of its SPIFFE ID).
	Node string
	// Network is the node's network (the trust domain of its SPIFFE ID).
	Network string
	// Kind is the kind of the SPIFFE ID: node, admin or root.
	Kind string
	// KID is the kid of the key that signed the token.
	KID string
}

// VerifierStats are counters for metrics.
type VerifierStats struct {
	Hits, Misses, Refreshes uint64
	Cached                  int
}

// Verifier verifies keymesh tokens locally against the trust state (keys,
// revocations, anchors). It is safe for concurrent use. See the package
// documentation for the order of checks and the caches.
type Verifier struct {
	cfg       VerifierConfig
	now       func() time.Time
	refresher Refresher

	mu      sync.RWMutex
	gen     uint64 // bumped by Invalidate and SetAnchors
	anchors *anchorSet
	tokens  map[[32]byte]*tokenEntry
	chains  map[string]*chainEntry

	refreshMu   sync.Mutex
	lastRefresh time.Time

	hits, misses, refreshes atomic.Uint64
}

// tokenEntry is a cached verification.
type tokenEntry struct {
	gen      uint64
	until    time.Time // exp + skew
	verified Verified
	serials  []string
}

// chainEntry is a cached chain verification of one key.
type chainEntry struct {
	gen       uint64
	certs     []*x509.Certificate // as presented (compared by DER)
	pub       crypto.PublicKey
	id        SPIFFEID
	serials   []string
	leafUntil time.Time
	validFrom time.Time
	validTo   time.Time
}

// NewVerifier checks cfg and returns a Verifier.
func NewVerifier(cfg VerifierConfig) (*Verifier, error) {
	if cfg.Skew == 0 {
		cfg.Skew = 30 * time.Second
	}
	if cfg.MaxTokenSize == 0 {
		cfg.MaxTokenSize = DefaultMaxTokenSize
	}
	if cfg.CacheSize == 0 {
		cfg.CacheSize = 10000
	}
	if cfg.RefreshCooldown == 0 {
		cfg.RefreshCooldown = 10 * time.Second
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg.Audience = slices.Clone(cfg.Audience)
	v := &Verifier{
		cfg:     cfg,
		now:     cfg.Clock,
		anchors: newAnchorSet(cfg.Anchors),
		tokens:  make(map[[32]byte]*tokenEntry),
		chains:  make(map[string]*chainEntry),
	}
	if v.now == nil {
		v.now = time.Now
	}
	v.refresher, _ = cfg.Keys.(Refresher)
	return v, nil
}

// SetAnchors replaces the trust anchors and invalidates both caches.
func (v *Verifier) SetAnchors(a TrustAnchors) error {
	if err := a.validate(); err != nil {
		return err
	}
	s := newAnchorSet(a)
	v.mu.Lock()
	v.anchors = s
	v.invalidateLocked()
	v.mu.Unlock()
	return nil
}

// Skew is the clock skew the verifier tolerates: a token stays valid
// until its exp plus Skew (a replay cache keeps a token that long).
func (v *Verifier) Skew() time.Duration { return v.cfg.Skew }

// Invalidate empties the cache of verified tokens and of verified chains.
// Call it whenever the trust state changes: a revocation, a key added,
// removed or changing state, a node's principals. (Cache hits re-check
// revocations anyway; Invalidate is what makes key and grant changes take
// effect on cached tokens.)
func (v *Verifier) Invalidate() {
	v.mu.Lock()
	v.invalidateLocked()
	v.mu.Unlock()
}

func (v *Verifier) invalidateLocked() {
	v.gen++
	clear(v.tokens)
	clear(v.chains)
}

// Generation counts invalidations (Invalidate and SetAnchors calls).
func (v *Verifier) Generation() uint64 {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.gen
}

// Stats returns cache counters.
func (v *Verifier) Stats() VerifierStats {
	v.mu.RLock()
	n := len(v.tokens)
	v.mu.RUnlock()
	return VerifierStats{Hits: v.hits.Load(), Misses: v.misses.Load(), Refreshes: v.refreshes.Load(), Cached: n}
}

// Verify checks req.Token and returns its verified claims, or a
// *VerifyError whose Err wraps the sentinel of the first check that failed.
// ctx bounds a refresh of the key source (unknown kid).
func (v *Verifier) Verify(ctx context.Context, req VerifyRequest) (Verified, error) {
	now := v.now()
	if len(req.Token) > v.cfg.MaxTokenSize {
		return Verified{}, refuse(ErrTooLarge, "%d bytes, limit %d", len(req.Token), v.cfg.MaxTokenSize)
	}
	aud := req.Audience
	if len(aud) == 0 {
		aud = v.cfg.Audience
	}
	if len(aud) == 0 {
		return Verified{}, refuse(ErrAudience, "the verifier has no audience configured")
	}
	var sum [32]byte
	var gen uint64 // the generation the verification starts from
	if v.cfg.CacheSize > 0 {
		sum = sha256.Sum256([]byte(req.Token))
		v.mu.RLock()
		e := v.tokens[sum]
		gen = v.gen
		v.mu.RUnlock()
		if e != nil && e.gen == gen && !now.After(e.until) {
			v.hits.Add(1)
			if err := v.checkRevoked(e.verified, e.serials); err != nil {
				return Verified{}, err
			}
			if err := checkRequest(&e.verified.Claims, aud, &req); err != nil {
				return Verified{}, err
			}
			vd := e.verified
			vd.Claims.Audience = slices.Clone(vd.Claims.Audience) // the entry stays the cache's own
			return vd, nil
		}
		v.misses.Add(1)
	}
	vd, serials, err := v.verify(ctx, req.Token, now)
	if err != nil {
		return Verified{}, err
	}
	if err := checkRequest(&vd.Claims, aud, &req); err != nil {
		return Verified{}, err
	}
	if v.cfg.CacheSize > 0 {
		e := &tokenEntry{gen: gen, until: vd.Claims.Expiry.Add(v.cfg.Skew), verified: vd, serials: serials}
		e.verified.Claims.Audience = slices.Clone(vd.Claims.Audience)
		v.store(sum, e, now)
	}
	return vd, nil
}

// verify runs checks 2 to 12 of the package documentation: all but those
// that depend on the request.
func (v *Verifier) verify(ctx context.Context, token string, now time.Time) (Verified, []string, error) {
	fail := func(err error) (Verified, []string, error) { return Verified{}, nil, err }

	// 2. Strict compact-JWS parse (header and signature).
	tok, err := parseCompact(token)
	if err != nil {
		return fail(wrapped(ErrMalformed, err))
	}
	// 3. Algorithm allow-list.
	if !allowedAlg(tok.alg) {
		return fail(refuse(ErrAlgNotAllowed, "%q", truncate(tok.alg, 16)))
	}
	// 4. Key by kid (one refresh, rate-limited).
	key, err := v.lookup(ctx, tok.kid, now)
	if err != nil {
		return fail(refuseErr(ErrUnknownKey, err))
	}
	if key.KID != tok.kid {
		return fail(refuse(ErrUnknownKey, "key source returned kid %q for %q", truncate(key.KID, 64), truncate(tok.kid, 64)))
	}
	// 5. The algorithm must fit the key.
	keyAlg, err := AlgorithmFor(key.Public)
	if err != nil {
		return fail(refuseErr(ErrAlgKeyMismatch, err))
	}
	if keyAlg != tok.alg {
		return fail(refuse(ErrAlgKeyMismatch, "%s header on a %s key", tok.alg, keyAlg))
	}
	// 6. Signature; only then are the claims decoded (strictly).
	if !verifyJWS(key.Public, tok.alg, []byte(tok.input), tok.signature) {
		return fail(refuse(ErrSignature, ""))
	}
	c, err := tok.claims()
	if err != nil {
		return fail(wrapped(ErrClaims, err))
	}
	// 7. The key's certificate chain to an accepted anchor (cached per kid).
	ch, err := v.chain(key, now)
	if err != nil {
		return fail(err)
	}
	// 8. Key state and lifetime.
	switch key.State {
	case KeyActive:
	case KeyRetiring:
		if !key.RetiringSince.IsZero() && c.IssuedAt.After(key.RetiringSince.Add(v.cfg.Skew)) {
			return fail(refuse(ErrKeyState, "retiring key used after %v", key.RetiringSince))
		}
	default:
		return fail(refuse(ErrKeyState, "key state %q", truncate(string(key.State), 16)))
	}
	if !key.NotAfter.IsZero() && (c.IssuedAt.After(key.NotAfter) || c.Expiry.After(key.NotAfter)) {
		return fail(refuse(ErrKeyExpired, "token outlives the key (not after %v)", key.NotAfter))
	}
	if c.IssuedAt.After(ch.leafUntil) || c.Expiry.After(ch.leafUntil) {
		return fail(refuse(ErrKeyExpired, "token outlives the certificate (not after %v)", ch.leafUntil))
	}
	vd := Verified{Claims: c, Node: ch.id.Name, Network: ch.id.Network, Kind: ch.id.Kind, KID: key.KID}
	// 9. Revocation: jti, kid, certificate serials, node.
	if err := v.checkRevoked(vd, ch.serials); err != nil {
		return fail(err)
	}
	// 10. Time, with bounded skew.
	if c.IssuedAt.After(c.Expiry) || c.NotBefore.After(c.Expiry) {
		return fail(refuse(ErrClaims, "iat or nbf after exp"))
	}
	if now.After(c.Expiry.Add(v.cfg.Skew)) {
		return fail(refuse(ErrExpired, "at %v", c.Expiry))
	}
	if now.Before(c.NotBefore.Add(-v.cfg.Skew)) {
		return fail(refuse(ErrNotYetValid, "until %v", c.NotBefore))
	}
	if c.IssuedAt.After(now.Add(v.cfg.Skew)) {
		return fail(refuse(ErrIssuedInFuture, "at %v", c.IssuedAt))
	}
	// 11. iss == sub == the SPIFFE ID of the key's certificate; the key's
	// owner is that certificate's subject.
	if c.Issuer != c.Subject {
		return fail(refuse(ErrIssuer, ""))
	}
	if c.Subject != ch.id.String() {
		return fail(refuse(ErrSubject, "sub %q, certificate %q", truncate(c.Subject, 256), ch.id))
	}
	if key.Node != ch.id.Name {
		return fail(refuse(ErrKeyCertMismatch, "key owner %q, certificate %q", truncate(key.Node, 64), ch.id))
	}
	// 12. Principal known and granted.
	if !c.Principal.Known() {
		return fail(refuse(ErrPrincipal, "%q", truncate(string(c.Principal), 32)))
	}
	if !slices.Contains(key.Principals, c.Principal) {
		return fail(refuse(ErrPrincipalNotGranted, "%s", c.Principal))
	}
	return vd, ch.serials, nil
}

// checkRevoked checks the four revocation levels.
func (v *Verifier) checkRevoked(vd Verified, serials []string) error {
	r := v.cfg.Revocations
	if r.Revoked(RevokeToken, vd.Claims.ID) {
		return refuse(ErrTokenRevoked, "")
	}
	if r.Revoked(RevokeKey, vd.KID) {
		return refuse(ErrKeyRevoked, "")
	}
	for _, s := range serials {
		if r.Revoked(RevokeCert, s) {
			return refuse(ErrCertRevoked, "serial %s", s)
		}
	}
	if r.Revoked(RevokeNode, vd.Node) {
		return refuse(ErrNodeRevoked, "")
	}
	return nil
}

// checkRequest runs the checks that depend on the request: audience, binding.
func checkRequest(c *Claims, aud []string, req *VerifyRequest) error {
	ok := false
	for _, a := range c.Audience {
		if slices.Contains(aud, a) {
			ok = true
			break
		}
	}
	if !ok {
		return refuse(ErrAudience, "")
	}
	switch {
	case c.CertThumbprint == "" && req.RequireBinding:
		return refuse(ErrBindingMissing, "an unbound token where a bound one is required")
	case c.CertThumbprint == "":
	case req.PeerCert == nil:
		return refuse(ErrBindingMissing, "a bound token presented without a certificate")
	case !constantTimeEqual(c.CertThumbprint, CertThumbprint(req.PeerCert)):
		return refuse(ErrBinding, "")
	}
	return nil
}

// lookup finds kid, refreshing the key source once (rate-limited) if unknown.
func (v *Verifier) lookup(ctx context.Context, kid string, now time.Time) (Key, error) {
	k, err := v.cfg.Keys.Key(kid)
	if err == nil || v.refresher == nil || !errors.Is(err, ErrUnknownKey) {
		return k, err
	}
	v.refreshMu.Lock()
	if !v.lastRefresh.IsZero() && now.Sub(v.lastRefresh) < v.cfg.RefreshCooldown && now.Sub(v.lastRefresh) >= 0 {
		v.refreshMu.Unlock()
		return Key{}, err
	}
	v.lastRefresh = now
	v.refreshMu.Unlock()
	v.refreshes.Add(1)
	if rerr := v.refresher.Refresh(ctx); rerr != nil {
		return Key{}, fmt.Errorf("%w (refresh failed: %w)", err, rerr)
	}
	return v.cfg.Keys.Key(kid)
}

// chain returns the verified chain of key, from the cache when the anchors
// generation, the presented certificates and the time window still match.
func (v *Verifier) chain(key Key, now time.Time) (*chainEntry, error) {
	if len(key.Chain) == 0 {
		return nil, refuse(ErrChain, "the key has no certificate chain")
	}
	if !samePublicKey(key.Chain[0].PublicKey, key.Public) {
		return nil, refuse(ErrKeyCertMismatch, "the leaf certificate does not hold the key")
	}
	v.mu.RLock()
	gen, anchors := v.gen, v.anchors
	e := v.chains[key.KID]
	v.mu.RUnlock()
	if e != nil && e.gen == gen && sameCerts(e.certs, key.Chain) && samePublicKey(e.pub, key.Public) &&
		!now.Before(e.validFrom) && !now.After(e.validTo) {
		return e, nil
	}
	e, err := verifyChain(key, anchors, now)
	if err != nil {
		return nil, err
	}
	e.gen = gen
	v.mu.Lock()
	if v.gen == gen {
		if len(v.chains) >= 4*max(v.cfg.CacheSize, 256) {
			clear(v.chains)
		}
		v.chains[key.KID] = e
	}
	v.mu.Unlock()
	return e, nil
}

func sameCerts(a, b []*x509.Certificate) bool {
	return slices.EqualFunc(a, b, func(x, y *x509.Certificate) bool { return x == y || bytes.Equal(x.Raw, y.Raw) })
}

// verifyChain checks key's chain under the anchors of the leaf's network.
func verifyChain(key Key, anchors *anchorSet, now time.Time) (*chainEntry, error) {
	if tp, err := Thumbprint(key.Public); err != nil || tp != key.KID {
		return nil, refuse(ErrKeyCertMismatch, "kid is not the key's thumbprint")
	}
	leaf := key.Chain[0]
	id, err := SPIFFEIDOf(leaf)
	if err != nil {
		return nil, refuseErr(ErrKeyCertMismatch, err)
	}
	if !anchors.accepted[id.Network] {
		return nil, refuse(ErrNetworkNotAccepted, "%s", id.Network)
	}
	pool := anchors.pools[id.Network]
	if pool == nil {
		return nil, refuse(ErrChain, "no roots for network %s", id.Network)
	}
	if leaf.KeyUsage != 0 && leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		return nil, refuse(ErrKeyCertMismatch, "the leaf certificate may not sign")
	}
	inter := x509.NewCertPool()
	for _, c := range key.Chain[1:] {
		inter.AddCert(c)
	}
	chains, err := leaf.Verify(x509.VerifyOptions{
		Roots:         pool,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return nil, refuseErr(ErrChain, err)
	}
	e := &chainEntry{certs: slices.Clone(key.Chain), pub: key.Public, id: id, leafUntil: leaf.NotAfter}
	e.validFrom, e.validTo = leaf.NotBefore, leaf.NotAfter
	for _, c := range chains[0] {
		if c.NotBefore.After(e.validFrom) {
			e.validFrom = c.NotBefore
		}
		if c.NotAfter.Before(e.validTo) {
			e.validTo = c.NotAfter
		}
	}
	for _, c := range key.Chain {
		e.serials = append(e.serials, SerialHex(c))
	}
	return e, nil
}

// store caches a verification, evicting expired entries (then arbitrary
// ones) when full.
func (v *Verifier) store(sum [32]byte, e *tokenEntry, now time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if e.gen != v.gen {
		return // invalidated while verifying
	}
	if len(v.tokens) >= v.cfg.CacheSize {
		for k, old := range v.tokens {
			if now.After(old.until) || old.gen != v.gen {
				delete(v.tokens, k)
			}
		}
		target := v.cfg.CacheSize - v.cfg.CacheSize/10 - 1
		for k := range v.tokens {
			if len(v.tokens) <= target {
				break
			}
			delete(v.tokens, k)
		}
	}
	v.tokens[sum] = e
}

// Signer is a key checked for signatures on objects other than tokens (a
// route, a path segment): its owner's identity from the verified chain.
type Signer struct {
	Key
	Network string
}

// SignerKey returns the key kid once it may verify a signature its owner
// made at signedAt: the key is in the key source, its chain reaches an
// accepted anchor now (cached per kid, as for tokens), its state is active
// (or retiring, for signatures made before it retired, within the skew),
// signedAt is within the key's and its certificate's lifetime, and
// neither the key, a certificate of its chain nor its node is revoked.
// The caller verifies the signature with the returned public key.
func (v *Verifier) SignerKey(ctx context.Context, kid string, signedAt time.Time) (Signer, error) {
	now := v.now()
	key, err := v.lookup(ctx, kid, now)
	if err != nil {
		return Signer{}, refuseErr(ErrUnknownKey, err)
	}
	if key.KID != kid {
		return Signer{}, refuse(ErrUnknownKey, "key source returned kid %q for %q", truncate(key.KID, 64), truncate(kid, 64))
	}
	ch, err := v.chain(key, now)
	if err != nil {
		return Signer{}, err
	}
	switch key.State {
	case KeyActive:
	case KeyRetiring:
		if !key.RetiringSince.IsZero() && signedAt.After(key.RetiringSince.Add(v.cfg.Skew)) {
			return Signer{}, refuse(ErrKeyState, "retiring key used after %v", key.RetiringSince)
		}
	default:
		return Signer{}, refuse(ErrKeyState, "key state %q", truncate(string(key.State), 16))
	}
	if !key.NotAfter.IsZero() && signedAt.After(key.NotAfter) {
		return Signer{}, refuse(ErrKeyExpired, "signed after the key's end (%v)", key.NotAfter)
	}
	if signedAt.After(ch.leafUntil) {
		return Signer{}, refuse(ErrKeyExpired, "signed after the certificate's end (%v)", ch.leafUntil)
	}
	if key.Node != ch.id.Name {
		return Signer{}, refuse(ErrKeyCertMismatch, "key owner %q, certificate %q", truncate(key.Node, 64), ch.id)
	}
	if err := v.checkRevoked(Verified{Node: ch.id.Name, KID: key.KID}, ch.serials); err != nil {
		return Signer{}, err
	}
	return Signer{Key: key, Network: ch.id.Network}, nil
}
