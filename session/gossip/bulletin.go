package gossip

import (
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/keymesh/keymesh/fsm"
	"github.com/keymesh/keymesh/identity/trust"
)

// Bulletin is a batch of revocations a root server signs with its issuing
// key: the network, the Raft index range the revocations were committed
// in, the revocations, when it was signed, and the issuing certificate
// (signed by the network's AS root) whose key signed it. One encoding,
// canonical CBOR with the integer keys below; SigHash is over it without
// Sig.
type Bulletin struct {
	Network     string       `cbor:"1,keyasint"`
	From        uint64       `cbor:"2,keyasint"` // first Raft index of the batch
	To          uint64       `cbor:"3,keyasint"` // last
	Revocations []Revocation `cbor:"4,keyasint"`
	Time        int64        `cbor:"5,keyasint"` // Unix seconds
	Issuer      []byte       `cbor:"6,keyasint"` // DER of the issuing certificate
	Sig         []byte       `cbor:"7,keyasint,omitempty"`
}

// Revocation is one revocation of a bulletin.
type Revocation struct {
	Kind string `cbor:"1,keyasint"` // token, key, cert, node
	ID   string `cbor:"2,keyasint"`
	Time int64  `cbor:"3,keyasint"`
}

// Bulletin limits.
const (
	MaxBulletinRevocations = 256
	MaxBulletinSize        = 32 << 10
	// BulletinMaxAge: an older bulletin is stale (its revocations arrive
	// by trust sync).
	BulletinMaxAge = 10 * time.Minute
	bulletinDomain = "keymesh bulletin v1\x00"
)

// Bulletin refusals (wrapped; errors.Is). Each is dropped without an
// answer and counted.
var (
	ErrUnsigned     = errors.New("gossip: bulletin not signed")
	ErrBulletinSig  = errors.New("gossip: bulletin signature does not verify")
	ErrIssuer       = errors.New("gossip: bulletin issuer not trusted")
	ErrOtherNetwork = errors.New("gossip: bulletin of another network")
	ErrStale        = errors.New("gossip: bulletin stale")
	ErrReplayed     = errors.New("gossip: bulletin already applied")
)

// SigHash is what the issuer signs: SHA-256 over a domain tag and the
// canonical encoding of the bulletin without Sig.
func (b *Bulletin) SigHash() ([32]byte, error) {
	body := *b
	body.Sig = nil
	enc, err := encMode.Marshal(&body)
	if err != nil {
		return [32]byte{}, err
	}
	return sha256.Sum256(append([]byte(bulletinDomain), enc...)), nil
}

// Encode is the bulletin's canonical encoding.
func (b *Bulletin) Encode() ([]byte, error) { return encMode.Marshal(b) }

// DecodeBulletin decodes a bulletin strictly, and checks its shape.
func DecodeBulletin(p []byte) (Bulletin, error) {
	if len(p) > MaxBulletinSize {
		return Bulletin{}, fmt.Errorf("%w: bulletin of %d bytes, at most %d", ErrMalformed, len(p), MaxBulletinSize)
	}
	var b Bulletin
	if err := decodeCanonical(p, &b); err != nil {
		return Bulletin{}, err
	}
	if b.Network == "" || b.From == 0 || b.To < b.From || b.Time <= 0 || len(b.Revocations) == 0 || len(b.Revocations) > MaxBulletinRevocations {
		return Bulletin{}, fmt.Errorf("%w: bulletin fields", ErrMalformed)
	}
	for _, r := range b.Revocations {
		switch fsm.RevocationKind(r.Kind) {
		case fsm.RevocationToken, fsm.RevocationKey, fsm.RevocationCert, fsm.RevocationNode:
		default:
			return Bulletin{}, fmt.Errorf("%w: revocation kind %q", ErrMalformed, trunc(r.Kind))
		}
		if r.ID == "" || len(r.ID) > 256 {
			return Bulletin{}, fmt.Errorf("%w: revocation id", ErrMalformed)
		}
	}
	return b, nil
}

// SignBulletin signs b with the issuing key of cert (a root server's).
func SignBulletin(b *Bulletin, cert *x509.Certificate, key crypto.Signer) error {
	b.Issuer, b.Sig = cert.Raw, nil
	h, err := b.SigHash()
	if err != nil {
		return err
	}
	b.Sig, err = sign(key, h[:])
	return err
}

// SignBulletins signs the revocations committed in the Raft indexes from
// to to in as many bulletins as it takes for each to fit one gossip
// message (a few revocations each with the issuing certificate along).
func SignBulletins(network string, from, to uint64, revs []Revocation, at time.Time, cert *x509.Certificate, key crypto.Signer) ([]Bulletin, error) {
	var out []Bulletin
	fits := func(b Bulletin) (bool, error) {
		b.Issuer, b.Sig = cert.Raw, make([]byte, maxSigLen)
		enc, err := b.Encode()
		if err != nil {
			return false, err
		}
		msg, err := encMode.Marshal(envelope{Relayer: strings.Repeat("n", maxIDLen), Bulletin: enc})
		return err == nil && len(msg)+1 <= maxGossipMessage, err
	}
	cur := Bulletin{Network: network, From: from, To: to, Time: at.Unix()}
	flush := func() error {
		if len(cur.Revocations) == 0 {
			return nil
		}
		b := cur
		if err := SignBulletin(&b, cert, key); err != nil {
			return err
		}
		out = append(out, b)
		cur.Revocations = nil
		return nil
	}
	for _, r := range revs {
		next := cur
		next.Revocations = append(slices.Clip(cur.Revocations), r)
		ok, err := fits(next)
		if err != nil {
			return nil, err
		}
		if !ok && len(cur.Revocations) == 0 {
			return nil, fmt.Errorf("%w: one revocation (%s %s) does not fit a gossip message", ErrTooLarge, r.Kind, trunc(r.ID))
		}
		if !ok {
			if err := flush(); err != nil {
				return nil, err
			}
			next.Revocations = []Revocation{r}
		}
		cur = next
	}
	return out, flush()
}

// maxSigLen is the longest ASN.1 ECDSA signature of the curves issuers use
// (P-384).
const maxSigLen = 104

// Verify checks b for the member of network whose trust state is view at
// now: of this network, fresh, signed, by an issuing certificate that
// chains to the network's AS root and is not revoked, and not older than
// what view already holds (applied is the last index a bulletin or the
// trust sync brought).
func (b *Bulletin) Verify(view trust.View, network string, applied uint64, now time.Time) error {
	if err := b.precheck(network, applied, now); err != nil {
		return err
	}
	return b.verifySignature(view, network, now)
}

// precheck is what costs no signature check: the network, the index, the
// time, and a signature present.
func (b *Bulletin) precheck(network string, applied uint64, now time.Time) error {
	if b.Network != network {
		return fmt.Errorf("%w: %s", ErrOtherNetwork, trunc(b.Network))
	}
	if b.To <= applied {
		return fmt.Errorf("%w: up to index %d, %d applied", ErrReplayed, b.To, applied)
	}
	at := time.Unix(b.Time, 0)
	if now.Sub(at) > BulletinMaxAge || at.After(now.Add(time.Minute)) {
		return fmt.Errorf("%w: signed %s", ErrStale, at.UTC().Format(time.RFC3339))
	}
	if len(b.Sig) == 0 || len(b.Issuer) == 0 {
		return ErrUnsigned
	}
	return nil
}

// verifySignature checks the issuer's chain and the signature.
func (b *Bulletin) verifySignature(view trust.View, network string, now time.Time) error {
	issuer, err := x509.ParseCertificate(b.Issuer)
	if err != nil || !issuer.IsCA {
		return fmt.Errorf("%w: not an issuing certificate", ErrIssuer)
	}
	anchors, err := trust.Anchors(view, network)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrIssuer, err)
	}
	pool := x509.NewCertPool()
	for _, r := range anchors.Roots[network] {
		pool.AddCert(r)
	}
	chains, err := issuer.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	if err != nil {
		return fmt.Errorf("%w: %w", ErrIssuer, err)
	}
	if len(chains[0]) < 2 {
		return fmt.Errorf("%w: a root signs no bulletin; an issuing certificate under it does", ErrIssuer)
	}
	if err := trust.CheckChain(view, chains[0]); err != nil {
		return fmt.Errorf("%w: %w", ErrIssuer, err)
	}
	h, err := b.SigHash()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if !verifySig(issuer.PublicKey, h[:], b.Sig) {
		return ErrBulletinSig
	}
	return nil
}
