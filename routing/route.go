package routing

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/fxamacker/cbor/v2"
	"github.com/keymesh/keymesh/identity"
)

// Route is a route record: what it reaches (NLRI), who originates it and
// in which network, its attributes, when the origin signed it and its
// sequence number, and the origin's signature under its node key (KID, the
// key's thumbprint in the trust view). Path holds a segment per hop that
// passed it on, each forward-signed to the neighbour it was sent to.
//
// The record has one encoding, canonical CBOR with the integer keys
// below; SigHash is over it without Sig and Path. New fields take new
// keys; a key is never reused.
type Route struct {
	NLRI     NLRI              `cbor:"1,keyasint" json:"nlri"`
	Origin   string            `cbor:"2,keyasint" json:"origin"`
	Network  string            `cbor:"3,keyasint" json:"network"`
	NextHop  string            `cbor:"4,keyasint,omitempty" json:"next_hop,omitempty"`
	Meta     map[string]string `cbor:"5,keyasint,omitempty" json:"meta,omitempty"`
	SignedAt int64             `cbor:"6,keyasint" json:"signed_at"` // Unix seconds
	Seq      uint64            `cbor:"7,keyasint" json:"seq"`
	KID      string            `cbor:"8,keyasint" json:"kid"`
	Sig      []byte            `cbor:"9,keyasint,omitempty" json:"sig,omitempty"`
	Path     []Segment         `cbor:"10,keyasint,omitempty" json:"path,omitempty"`
}

// Segment is one hop of a route's path: the node that passed the route on,
// the neighbour it sent it to, its key, whether it marked the route
// Only-To-Customer (RFC 9234), and its signature over the previous
// signature (the origin's for the first segment) and this segment without
// its signature. A path is a chain: removing, reordering or inserting a
// hop, or sending it to another neighbour, breaks a signature.
type Segment struct {
	Node   string `cbor:"1,keyasint" json:"node"`
	Target string `cbor:"2,keyasint" json:"target"`
	KID    string `cbor:"3,keyasint" json:"kid"`
	OTC    bool   `cbor:"4,keyasint,omitempty" json:"otc,omitempty"`
	Sig    []byte `cbor:"5,keyasint,omitempty" json:"sig,omitempty"`
}

// Limits of a route record, checked by Check before any signature.
const (
	MaxPath      = 32  // segments
	MaxMeta      = 16  // metadata pairs
	MaxMetaKey   = 64  // bytes
	MaxMetaValue = 256 // bytes
	MaxID        = 63  // node id bytes
	MaxKID       = 64  // kid bytes
	MaxSig       = 160 // signature bytes (P-384 ASN.1 is at most 104)
	MaxNetwork   = 253 // network name bytes
)

// Route errors. Validation failures wrap one of these (errors.Is).
var (
	ErrMalformed = errors.New("routing: malformed route")
	ErrSignature = errors.New("routing: bad signature")
	ErrPath      = errors.New("routing: bad path")
	ErrKey       = errors.New("routing: signing key not accepted")
	ErrStale     = errors.New("routing: route outside the replay window")
)

// Domain separation of the signed hashes.
const (
	routeDomain = "keymesh route v1\x00"
	pathDomain  = "keymesh path v1\x00"
)

var (
	encMode cbor.EncMode
	decMode cbor.DecMode
)

func init() {
	var err error
	if encMode, err = cbor.CoreDetEncOptions().EncMode(); err != nil {
		panic(err)
	}
	if decMode, err = (cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsForbidden,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		MaxNestedLevels:   6,
		MaxArrayElements:  MaxUpdateRoutes,
		MaxMapPairs:       MaxMeta,
		UTF8:              cbor.UTF8RejectInvalid,
	}).DecMode(); err != nil {
		panic(err)
	}
}

// MarshalCBOR writes the NLRI's text form.
func (n NLRI) MarshalCBOR() ([]byte, error) {
	if n.IsZero() {
		return nil, fmt.Errorf("%w: empty", ErrNLRI)
	}
	return encMode.Marshal(n.String())
}

// UnmarshalCBOR reads the NLRI's canonical text form.
func (n *NLRI) UnmarshalCBOR(b []byte) error {
	var s string
	if err := decMode.Unmarshal(b, &s); err != nil {
		return err
	}
	return n.UnmarshalText([]byte(s))
}

// Encode is the record's canonical encoding, signatures and path included.
func (r *Route) Encode() ([]byte, error) { return encMode.Marshal(r) }

// SigHash is what the origin signs: SHA-256 over a domain tag and the
// canonical encoding of the record without Sig and Path.
func (r *Route) SigHash() ([32]byte, error) {
	body := *r
	body.Sig, body.Path = nil, nil
	b, err := encMode.Marshal(&body)
	if err != nil {
		return [32]byte{}, err
	}
	return sha256.Sum256(append([]byte(routeDomain), b...)), nil
}

// pathInput is what a segment's signature covers.
type pathInput struct {
	Prev []byte  `cbor:"1,keyasint"`
	Seg  Segment `cbor:"2,keyasint"`
}

// SegmentHash is what the signer of segment i signs: SHA-256 over a domain
// tag and the canonical encoding of the previous signature (the origin's
// for i = 0) with segment i without its signature.
func (r *Route) SegmentHash(i int) ([32]byte, error) {
	if i < 0 || i >= len(r.Path) {
		return [32]byte{}, fmt.Errorf("%w: no segment %d", ErrPath, i)
	}
	prev := r.Sig
	if i > 0 {
		prev = r.Path[i-1].Sig
	}
	seg := r.Path[i]
	seg.Sig = nil
	b, err := encMode.Marshal(pathInput{Prev: prev, Seg: seg})
	if err != nil {
		return [32]byte{}, err
	}
	return sha256.Sum256(append([]byte(pathDomain), b...)), nil
}

// Signer is a node's signing identity: its id, its key's kid and the key.
type Signer struct {
	Node string
	KID  string
	Key  crypto.Signer
}

// Sign makes r's origin signature with s (the origin's current key),
// setting KID and Sig; r.Path must be empty.
func (r *Route) Sign(s Signer) error {
	if len(r.Path) > 0 {
		return fmt.Errorf("%w: an origin signs a route before any hop", ErrPath)
	}
	if s.Node != r.Origin {
		return fmt.Errorf("%w: %s cannot sign as origin %s", ErrSignature, s.Node, r.Origin)
	}
	r.KID, r.Sig = s.KID, nil
	h, err := r.SigHash()
	if err != nil {
		return err
	}
	sig, err := sign(s.Key, h[:])
	if err != nil {
		return err
	}
	r.Sig = sig
	return nil
}

// Forward returns a copy of r with s's segment to target appended (otc
// marks it Only-To-Customer, as RFC 9234 has a route sent to a customer
// or a peer marked); r is not changed.
func (r *Route) Forward(s Signer, target string, otc bool) (*Route, error) {
	out := *r
	out.Path = append(make([]Segment, 0, len(r.Path)+1), r.Path...)
	out.Path = append(out.Path, Segment{Node: s.Node, Target: target, KID: s.KID, OTC: otc || r.OTC()})
	h, err := out.SegmentHash(len(out.Path) - 1)
	if err != nil {
		return nil, err
	}
	sig, err := sign(s.Key, h[:])
	if err != nil {
		return nil, err
	}
	out.Path[len(out.Path)-1].Sig = sig
	return &out, nil
}

// OTC reports whether a hop marked the route Only-To-Customer.
func (r *Route) OTC() bool {
	for _, s := range r.Path {
		if s.OTC {
			return true
		}
	}
	return false
}

// Nodes is the route's path as node ids, the origin first.
func (r *Route) Nodes() []string {
	out := make([]string, 0, len(r.Path)+1)
	out = append(out, r.Origin)
	for _, s := range r.Path[min(1, len(r.Path)):] {
		out = append(out, s.Node)
	}
	return out
}

// Signed is the origin's signing time.
func (r *Route) Signed() time.Time { return time.Unix(r.SignedAt, 0) }

// Key identifies a route among a peer's: its NLRI.
func (r *Route) Key() string { return r.NLRI.String() }

func sign(k crypto.Signer, digest []byte) ([]byte, error) {
	switch k.Public().(type) {
	case ed25519.PublicKey:
		return k.Sign(rand.Reader, digest, crypto.Hash(0))
	case *ecdsa.PublicKey:
		return k.Sign(rand.Reader, digest, crypto.SHA256)
	}
	return nil, fmt.Errorf("%w: unsupported key type %T", ErrSignature, k.Public())
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

// Check checks the record's shape (sizes, names, attributes) and that the
// path is a chain from the origin; it verifies no signature.
func (r *Route) Check() error {
	if err := r.checkBody(); err != nil {
		return err
	}
	if r.KID == "" || len(r.KID) > MaxKID || len(r.Sig) == 0 || len(r.Sig) > MaxSig {
		return fmt.Errorf("%w: origin signature missing or oversized", ErrMalformed)
	}
	return r.checkPath()
}

// checkBody checks what the origin signs.
func (r *Route) checkBody() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, a...)...)
	}
	if r.NLRI.IsZero() {
		return bad("no NLRI")
	}
	if err := checkID("origin", r.Origin); err != nil {
		return err
	}
	if r.Network == "" || len(r.Network) > MaxNetwork || !utf8.ValidString(r.Network) {
		return bad("network %q", trunc(r.Network))
	}
	if r.NextHop != "" {
		a, err := netip.ParseAddr(r.NextHop)
		if err != nil || a.Zone() != "" || a.String() != r.NextHop {
			return bad("next hop %q is not an IP address in canonical form", trunc(r.NextHop))
		}
	}
	if len(r.Meta) > MaxMeta {
		return bad("%d metadata pairs, at most %d", len(r.Meta), MaxMeta)
	}
	for k, v := range r.Meta {
		if k == "" || len(k) > MaxMetaKey || len(v) > MaxMetaValue {
			return bad("metadata %q: keys 1 to %d bytes, values at most %d", trunc(k), MaxMetaKey, MaxMetaValue)
		}
	}
	if r.SignedAt <= 0 {
		return bad("no signing time")
	}
	return nil
}

// checkPath checks that the path is a chain from the origin, without
// loops, within MaxPath.
func (r *Route) checkPath() error {
	if len(r.Path) > MaxPath {
		return fmt.Errorf("%w: %d segments, at most %d", ErrPath, len(r.Path), MaxPath)
	}
	prev := r.Origin
	seen := map[string]bool{r.Origin: true}
	for i, s := range r.Path {
		if err := checkID("path node", s.Node); err != nil {
			return err
		}
		if err := checkTarget(s.Target); err != nil {
			return err
		}
		if s.KID == "" || len(s.KID) > MaxKID || len(s.Sig) == 0 || len(s.Sig) > MaxSig {
			return fmt.Errorf("%w: segment %d: signature missing or oversized", ErrMalformed, i)
		}
		if s.Node != prev {
			return fmt.Errorf("%w: segment %d is signed by %s, but the route was sent to %s", ErrPath, i, s.Node, prev)
		}
		if seen[s.Target] {
			return fmt.Errorf("%w: segment %d sends the route back to %s (a loop)", ErrPath, i, s.Target)
		}
		seen[s.Target] = true
		prev = s.Target
	}
	return nil
}

// checkTarget: a segment's target is a node id (of the signer's network)
// or a federated node's SPIFFE ID.
func checkTarget(t string) error {
	if strings.HasPrefix(t, "spiffe://") {
		if len(t) > MaxID+len("spiffe://")+2*253 {
			return fmt.Errorf("%w: path target %q", ErrMalformed, trunc(t))
		}
		if id, err := identity.ParseSPIFFEID(t); err != nil || id.Kind != identity.KindNode {
			return fmt.Errorf("%w: path target %q is not a node's SPIFFE ID", ErrMalformed, trunc(t))
		}
		return nil
	}
	return checkID("path target", t)
}

func checkID(what, id string) error {
	if id == "" || len(id) > MaxID {
		return fmt.Errorf("%w: %s %q", ErrMalformed, what, trunc(id))
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' && i > 0) {
			return fmt.Errorf("%w: %s %q is not a node id", ErrMalformed, what, trunc(id))
		}
	}
	return nil
}

// Update is the body of a session's UPDATE: routes announced (each with
// its path up to and including the sender's segment to the receiver) and
// NLRIs the sender no longer has a route for. Withdrawals need no
// signature: they only ever remove what this session brought.
type Update struct {
	Announce []Route `cbor:"1,keyasint,omitempty" json:"announce,omitempty"`
	Withdraw []NLRI  `cbor:"2,keyasint,omitempty" json:"withdraw,omitempty"`
}

// MaxUpdateRoutes bounds the routes and the withdrawals of one UPDATE.
const MaxUpdateRoutes = 256

// EncodeUpdate is u's canonical encoding.
func EncodeUpdate(u Update) ([]byte, error) { return encMode.Marshal(u) }

// DecodeUpdate decodes an UPDATE body: strictly (what the canonical
// encoding would not produce is refused), with its limits. Each route's
// shape, path and signatures are the Validator's business, route by
// route, so that one bad route is refused with its reason and the others
// of the UPDATE are not.
func DecodeUpdate(b []byte) (Update, error) {
	var u Update
	if err := decMode.Unmarshal(b, &u); err != nil {
		return Update{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	again, err := encMode.Marshal(u)
	if err != nil || !bytes.Equal(again, b) {
		return Update{}, fmt.Errorf("%w: not the canonical encoding", ErrMalformed)
	}
	if len(u.Announce)+len(u.Withdraw) == 0 {
		return Update{}, fmt.Errorf("%w: an empty UPDATE", ErrMalformed)
	}
	if len(u.Announce) > MaxUpdateRoutes || len(u.Withdraw) > MaxUpdateRoutes {
		return Update{}, fmt.Errorf("%w: more than %d routes or withdrawals", ErrMalformed, MaxUpdateRoutes)
	}
	return u, nil
}
