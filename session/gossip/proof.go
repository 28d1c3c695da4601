package gossip

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/keymesh/keymesh/identity"
)

// Proof is a member's statement of who and where it is: its node id,
// network and gossip address at a time, signed by its node key (KID).
// It is the member's memberlist meta (at most 512 bytes). One encoding,
// canonical CBOR with the integer keys below; SigHash is over it without
// Sig.
type Proof struct {
	Node    string `cbor:"1,keyasint"`
	Network string `cbor:"2,keyasint"`
	Addr    string `cbor:"3,keyasint"` // host:port where it gossips, canonical
	Time    int64  `cbor:"4,keyasint"` // Unix seconds
	KID     string `cbor:"5,keyasint"`
	Sig     []byte `cbor:"6,keyasint,omitempty"`
	// Peer is where the node takes peering sessions (host:port), if it
	// does: `--peer NODEID` dials it from the graph.
	Peer string `cbor:"7,keyasint,omitempty"`
}

// Proof limits.
const (
	MaxProofSize = 512           // memberlist's meta limit
	MaxProofAge  = 2 * time.Hour // members sign theirs again every hour
	proofDomain  = "keymesh membership v1\x00"
)

// Proof errors (wrapped; errors.Is).
var (
	ErrProof   = errors.New("gossip: membership proof refused")
	ErrNetwork = errors.New("gossip: network not accepted")
)

// SigHash is what the member signs: SHA-256 over a domain tag and the
// canonical encoding of the proof without Sig.
func (p *Proof) SigHash() ([32]byte, error) {
	body := *p
	body.Sig = nil
	b, err := encMode.Marshal(&body)
	if err != nil {
		return [32]byte{}, err
	}
	return sha256.Sum256(append([]byte(proofDomain), b...)), nil
}

// Encode is the proof's canonical encoding.
func (p *Proof) Encode() ([]byte, error) { return encMode.Marshal(p) }

// DecodeProof decodes a member's meta strictly, and checks its shape.
func DecodeProof(b []byte) (Proof, error) {
	if len(b) > MaxProofSize {
		return Proof{}, fmt.Errorf("%w: proof of %d bytes, at most %d", ErrMalformed, len(b), MaxProofSize)
	}
	var p Proof
	if err := decodeCanonical(b, &p); err != nil {
		return Proof{}, err
	}
	if err := p.check(); err != nil {
		return Proof{}, err
	}
	return p, nil
}

func (p *Proof) check() error {
	if !validID(p.Node) || p.Network == "" || len(p.Network) > 253 || p.Time <= 0 || p.KID == "" || len(p.KID) > 64 || len(p.Sig) > 160 {
		return fmt.Errorf("%w: proof fields", ErrMalformed)
	}
	ap, err := netip.ParseAddrPort(p.Addr)
	if err != nil || ap.String() != p.Addr || ap.Addr().Is4In6() || ap.Addr().Zone() != "" {
		return fmt.Errorf("%w: proof address %q is not a canonical IP:port", ErrMalformed, trunc(p.Addr))
	}
	if p.Peer != "" {
		host, port, err := net.SplitHostPort(p.Peer)
		if err != nil || host == "" || port == "" || len(p.Peer) > 255 {
			return fmt.Errorf("%w: proof peering address %q is not host:port", ErrMalformed, trunc(p.Peer))
		}
	}
	return nil
}

// Signer is a node's signing identity.
type Signer struct {
	Node string
	KID  string
	Key  crypto.Signer
}

// NewProof makes and signs the proof of s gossiping at addr, taking
// peering sessions at peer (or ""), at time at.
func NewProof(s Signer, network, addr, peer string, at time.Time) (Proof, error) {
	p := Proof{Node: s.Node, Network: network, Addr: addr, Time: at.Unix(), KID: s.KID, Peer: peer}
	if err := p.check(); err != nil {
		return Proof{}, err
	}
	h, err := p.SigHash()
	if err != nil {
		return Proof{}, err
	}
	if p.Sig, err = sign(s.Key, h[:]); err != nil {
		return Proof{}, err
	}
	return p, nil
}

// KeySource finds the key of a signature made at a time, checked against
// the trust view (identity.Verifier is one).
type KeySource interface {
	SignerKey(ctx context.Context, kid string, signedAt time.Time) (identity.Signer, error)
}

// Verify checks p as the meta of the memberlist member named name at
// addr: the proof names that member and address, is fresh (at most
// MaxProofAge old, at most skew ahead), its network is on accepted, and
// its signature verifies with a key the trust view gives the node of that
// network (not revoked).
func (p *Proof) Verify(ctx context.Context, keys KeySource, accepted []string, name, addr string, now time.Time) error {
	if p.Node != name {
		return fmt.Errorf("%w: the member %q shows %s's proof", ErrProof, trunc(name), p.Node)
	}
	if p.Addr != addr {
		return fmt.Errorf("%w: %s gossips from %s, its proof says %s", ErrProof, p.Node, trunc(addr), p.Addr)
	}
	if !slices.Contains(accepted, p.Network) {
		return fmt.Errorf("%w: %s", ErrNetwork, p.Network)
	}
	at := time.Unix(p.Time, 0)
	if now.Sub(at) > MaxProofAge || at.After(now.Add(time.Minute)) {
		return fmt.Errorf("%w: %s's proof is of %s", ErrProof, p.Node, at.UTC().Format(time.RFC3339))
	}
	k, err := keys.SignerKey(ctx, p.KID, at)
	if err != nil {
		return fmt.Errorf("%w: %s's key: %w", ErrProof, p.Node, err)
	}
	if k.Node != p.Node || k.Network != p.Network {
		return fmt.Errorf("%w: key %s is %s's of %s, not %s's of %s", ErrProof, p.KID, k.Node, k.Network, p.Node, p.Network)
	}
	h, err := p.SigHash()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if !verifySig(k.Public, h[:], p.Sig) {
		return fmt.Errorf("%w: %s's signature", ErrProof, p.Node)
	}
	return nil
}

func sign(k crypto.Signer, digest []byte) ([]byte, error) {
	switch k.Public().(type) {
	case ed25519.PublicKey:
		return k.Sign(rand.Reader, digest, crypto.Hash(0))
	case *ecdsa.PublicKey:
		return k.Sign(rand.Reader, digest, crypto.SHA256)
	}
	return nil, fmt.Errorf("gossip: unsupported key type %T", k.Public())
}

func verifySig(pub crypto.PublicKey, digest, sig []byte) bool {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		return ecdsa.VerifyASN1(k, digest, sig)
	case ed25519.PublicKey:
		return ed25519.Verify(k, digest, sig)
	}
	return false
}

// maxIDLen is the longest node id (a DNS label).
const maxIDLen = 63

func validID(id string) bool {
	if id == "" || len(id) > maxIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' && i > 0) {
			return false
		}
	}
	return true
}

func trunc(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
