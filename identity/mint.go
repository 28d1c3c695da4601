package identity

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	stdjson "encoding/json"
	"fmt"
	"io"
	"slices"
	"time"
)

// MinterConfig configures a Minter. Key and Cert are required.
type MinterConfig struct {
	// Key is the node's private key (ECDSA P-256/P-384 or Ed25519). It never
	// leaves the node; any crypto.Signer (e.g. a hardware key) will do.
	Key crypto.Signer
	// Cert is the node certificate of Key: it must hold Key's public key and
	// carry the node's SPIFFE ID as its one spiffe:// URI SAN.
	Cert *x509.Certificate
	// Chain are the intermediates above Cert (not the root), published in the
	// JWK's x5c after Cert.
	Chain []*x509.Certificate
	// Clock returns the current time; nil means time.Now.
	Clock func() time.Time
	// Rand is the source of jti values; nil means crypto/rand. (ECDSA and
	// Ed25519 signing use the system's secure randomness in any case.)
	Rand io.Reader
	// DefaultTTL is the lifetime of a token when MintRequest.TTL is zero.
	// Default 10 minutes.
	DefaultTTL time.Duration
	// MaxTTL bounds MintRequest.TTL. Default 24 hours.
	MaxTTL time.Duration
	// MinLifetime: a token whose lifetime, once clipped to the certificate's
	// NotAfter, would be shorter than this is refused (ErrMint), so an agent
	// that failed to renew learns it at once. Default 30 seconds.
	MinLifetime time.Duration
	// Principals, if set, are the only principals this minter will put in a
	// token (the node's grant). Verifiers enforce the grant in any case.
	Principals []Principal
}

func (c *MinterConfig) validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: minter: %s", ErrInvalidConfig, fmt.Sprintf(format, args...))
	}
	if c.Key == nil {
		return bad("Key is required")
	}
	if c.Cert == nil {
		return bad("Cert is required")
	}
	if !samePublicKey(c.Cert.PublicKey, c.Key.Public()) {
		return bad("Cert does not hold Key's public key")
	}
	if c.DefaultTTL < 0 || c.MaxTTL < 0 || c.MinLifetime < 0 {
		return bad("durations must not be negative")
	}
	if c.DefaultTTL > c.MaxTTL {
		return bad("DefaultTTL %v exceeds MaxTTL %v", c.DefaultTTL, c.MaxTTL)
	}
	for _, p := range c.Principals {
		if !p.Known() {
			return bad("unknown principal %q", p)
		}
	}
	return nil
}

// MintRequest asks for one token.
type MintRequest struct {
	// Audience names who the token is for (at least one).
	Audience []string
	// TTL is the lifetime; zero means MinterConfig.DefaultTTL. It is clipped
	// to the certificate's NotAfter.
	TTL time.Duration
	// Principal is the role the token claims.
	Principal Principal
	// BindCert, if set, binds the token to this (TLS) certificate:
	// cnf.x5t#S256 = base64url(SHA-256(BindCert.Raw)), RFC 8705.
	BindCert *x509.Certificate
}

// Minter mints tokens under one node key. It is safe for concurrent use. On
// key rotation build a new Minter; the old key stays in the JWKS (retiring)
// until the tokens it signed have expired.
type Minter struct {
	cfg      MinterConfig
	id       SPIFFEID
	alg      string
	jwk      JWK
	notAfter time.Time // earliest NotAfter of Cert and Chain
	prefix   string    // base64url(header) + "."
	now      func() time.Time
	rand     io.Reader
}

// NewMinter checks cfg and prepares the constant parts of every token.
func NewMinter(cfg MinterConfig) (*Minter, error) {
	if cfg.DefaultTTL == 0 {
		cfg.DefaultTTL = 10 * time.Minute
	}
	if cfg.MaxTTL == 0 {
		cfg.MaxTTL = 24 * time.Hour
	}
	if cfg.MinLifetime == 0 {
		cfg.MinLifetime = 30 * time.Second
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	id, err := SPIFFEIDOf(cfg.Cert)
	if err != nil {
		return nil, fmt.Errorf("%w: minter: %w", ErrInvalidConfig, err)
	}
	chain := append([]*x509.Certificate{cfg.Cert}, cfg.Chain...)
	jwk, err := NewJWK(cfg.Key.Public(), chain)
	if err != nil {
		return nil, fmt.Errorf("%w: minter: %w", ErrInvalidConfig, err)
	}
	notAfter := cfg.Cert.NotAfter
	for _, c := range cfg.Chain {
		if c.NotAfter.Before(notAfter) {
			notAfter = c.NotAfter
		}
	}
	hdr, err := stdjson.Marshal(header{Alg: jwk.Alg, Kid: jwk.Kid, Typ: ptr("JWT")})
	if err != nil {
		return nil, fmt.Errorf("identity: minter header: %w", err)
	}
	m := &Minter{
		cfg: cfg, id: id, alg: jwk.Alg, jwk: jwk, notAfter: notAfter,
		prefix: b64.EncodeToString(hdr) + ".",
		now:    cfg.Clock, rand: cfg.Rand,
	}
	if m.now == nil {
		m.now = time.Now
	}
	if m.rand == nil {
		m.rand = rand.Reader
	}
	return m, nil
}

func ptr[T any](v T) *T { return &v }

// ID returns the SPIFFE ID the minter's tokens carry as iss and sub.
func (m *Minter) ID() SPIFFEID { return m.id }

// KID returns the kid of the minter's key (its JWK thumbprint).
func (m *Minter) KID() string { return m.jwk.Kid }

// Algorithm returns the JWS alg the minter signs with.
func (m *Minter) Algorithm() string { return m.alg }

// JWK returns the public JWK of the minter's key, with x5c.
func (m *Minter) JWK() JWK { return m.jwk }

// Mint signs a token for req. iat = nbf = now (whole seconds); exp = now +
// TTL, clipped to the earliest NotAfter of the certificate chain so that a
// token never outlives its key's certificate. Refused (ErrMint) when the
// request is bad, the certificate is not yet valid or has expired, or the
// clipped lifetime is shorter than MinLifetime.
func (m *Minter) Mint(req MintRequest) (string, Claims, error) {
	if len(req.Audience) == 0 || len(req.Audience) > maxAudiences {
		return "", Claims{}, fmt.Errorf("%w: need 1..%d audiences", ErrMint, maxAudiences)
	}
	if slices.Contains(req.Audience, "") {
		return "", Claims{}, fmt.Errorf("%w: empty audience", ErrMint)
	}
	if !req.Principal.Known() {
		return "", Claims{}, fmt.Errorf("%w: unknown principal %q", ErrMint, req.Principal)
	}
	if len(m.cfg.Principals) > 0 && !slices.Contains(m.cfg.Principals, req.Principal) {
		return "", Claims{}, fmt.Errorf("%w: principal %s not granted to this node", ErrMint, req.Principal)
	}
	ttl := req.TTL
	if ttl == 0 {
		ttl = m.cfg.DefaultTTL
	}
	if ttl < 0 || ttl > m.cfg.MaxTTL {
		return "", Claims{}, fmt.Errorf("%w: TTL %v outside (0, %v]", ErrMint, req.TTL, m.cfg.MaxTTL)
	}
	now := m.now().Truncate(time.Second)
	if now.Before(m.cfg.Cert.NotBefore) {
		return "", Claims{}, fmt.Errorf("%w: certificate not valid before %v", ErrMint, m.cfg.Cert.NotBefore)
	}
	exp := now.Add(ttl)
	if limit := m.notAfter.Truncate(time.Second); exp.After(limit) {
		exp = limit
	}
	if exp.Sub(now) < m.cfg.MinLifetime {
		return "", Claims{}, fmt.Errorf("%w: certificate expires at %v; renew it", ErrMint, m.notAfter)
	}
	var jti [16]byte
	if _, err := io.ReadFull(m.rand, jti[:]); err != nil {
		return "", Claims{}, fmt.Errorf("%w: jti: %w", ErrMint, err)
	}
	c := Claims{
		Issuer: m.id.String(), Subject: m.id.String(), Audience: slices.Clone(req.Audience),
		Expiry: exp, NotBefore: now, IssuedAt: now,
		ID: b64.EncodeToString(jti[:]), Principal: req.Principal,
	}
	if req.BindCert != nil {
		c.CertThumbprint = CertThumbprint(req.BindCert)
	}
	payload, err := c.MarshalJSON()
	if err != nil {
		return "", Claims{}, fmt.Errorf("%w: %w", ErrMint, err)
	}
	n := len(m.prefix) + b64.EncodedLen(len(payload))
	buf := make([]byte, n, n+1+b64.EncodedLen(2*ecSize(AlgES384)))
	copy(buf, m.prefix)
	b64.Encode(buf[len(m.prefix):], payload)
	sig, err := signJWS(m.cfg.Key, m.alg, rand.Reader, buf)
	if err != nil {
		return "", Claims{}, fmt.Errorf("%w: sign: %w", ErrMint, err)
	}
	buf = append(buf, '.')
	buf = b64.AppendEncode(buf, sig)
	return string(buf), c, nil
}
