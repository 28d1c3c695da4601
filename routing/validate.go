package routing

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/keymesh/keymesh/fsm"
	"github.com/keymesh/keymesh/identity"
	"github.com/keymesh/keymesh/identity/trust"
)

// OriginState is a route's origin validation state, as RFC 6811 defines
// it against the replicated route authorizations: Valid when an
// authorization covering the prefix names the origin and allows the
// prefix's length; Invalid when authorizations cover the prefix but none
// does; NotFound when none covers it (and for service NLRIs, which
// authorizations do not name).
type OriginState uint8

// Origin validation states, best first.
const (
	Valid OriginState = iota + 1
	NotFound
	Invalid
)

func (s OriginState) String() string {
	switch s {
	case Valid:
		return "valid"
	case NotFound:
		return "not-found"
	case Invalid:
		return "invalid"
	}
	return fmt.Sprintf("state-%d", uint8(s))
}

// MarshalText names the state in JSON.
func (s OriginState) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// KeySource finds the key a route's or a segment's signature was made
// with, checked for a signature made at a time (identity.Verifier is one).
type KeySource interface {
	SignerKey(ctx context.Context, kid string, signedAt time.Time) (identity.Signer, error)
}

// Defaults of the Validator.
const (
	DefaultReplayWindow = 24 * time.Hour
	DefaultFutureSkew   = time.Minute
)

// ValidatorConfig configures a Validator.
type ValidatorConfig struct {
	// Node is this node's id: the target of the last segment of every
	// route it takes; Network is its network, whose route authorizations
	// the view holds (a route of another network is NotFound here).
	Node    string
	Network string
	// Keys checks the signing keys; View holds the route authorizations.
	Keys KeySource
	View func() trust.View
	// Clock is the time of the freshness check; nil is time.Now.
	Clock func() time.Time
	// ReplayWindow: a route signed longer ago is stale. Default 24 h.
	ReplayWindow time.Duration
	// FutureSkew: a route signed further in the future is refused.
	// Default 1 min.
	FutureSkew time.Duration
}

// Validator checks routes: shape, freshness, the origin's signature and
// every segment's, and the path ending at this node from the neighbour
// that sent it; and their origin validation state.
type Validator struct {
	cfg ValidatorConfig

	mu    sync.Mutex
	view  trust.View // the view auths was built from
	auths *authIndex
}

// NewValidator checks cfg and fills in defaults.
func NewValidator(cfg ValidatorConfig) (*Validator, error) {
	if err := checkID("node", cfg.Node); err != nil {
		return nil, err
	}
	if cfg.Network == "" {
		return nil, fmt.Errorf("routing: a validator needs its network")
	}
	if cfg.Keys == nil || cfg.View == nil {
		return nil, fmt.Errorf("routing: a validator needs keys and a trust view")
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.ReplayWindow == 0 {
		cfg.ReplayWindow = DefaultReplayWindow
	}
	if cfg.FutureSkew == 0 {
		cfg.FutureSkew = DefaultFutureSkew
	}
	return &Validator{cfg: cfg}, nil
}

// ReplayWindow is the validator's replay window.
func (v *Validator) ReplayWindow() time.Duration { return v.cfg.ReplayWindow }

// Verify checks r as received from neighbour from: its shape, that its
// last segment was signed by from for this node, that it is fresh, and
// every signature with a key the trust view accepts for its signer at the
// route's signing time (the origin's key in the origin's network). The
// error wraps ErrMalformed, ErrPath, ErrStale, ErrKey or ErrSignature.
func (v *Validator) Verify(ctx context.Context, r *Route, from string) error {
	if err := r.Check(); err != nil {
		return err
	}
	if len(r.Path) == 0 {
		return fmt.Errorf("%w: no segment: a route is always sent with its sender's segment", ErrPath)
	}
	last := r.Path[len(r.Path)-1]
	fromNode, fromNetwork := v.split(from)
	if last.Node != fromNode {
		return fmt.Errorf("%w: the last segment is %s's, but %s sent the route", ErrPath, last.Node, from)
	}
	// A sender of this network names this node by its node id, one of a
	// federated network by its SPIFFE ID (router.go, peerKey).
	self := v.cfg.Node
	if fromNetwork != v.cfg.Network {
		self = identity.SPIFFEID{Network: v.cfg.Network, Kind: identity.KindNode, Name: v.cfg.Node}.String()
	}
	if last.Target != self {
		return fmt.Errorf("%w: the route was signed for %s, not for this node", ErrPath, last.Target)
	}
	if err := v.Fresh(r); err != nil {
		return err
	}
	signed := r.Signed()
	h, err := r.SigHash()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	k, err := v.cfg.Keys.SignerKey(ctx, r.KID, signed)
	if err != nil {
		return fmt.Errorf("%w: origin %s: %w", ErrKey, r.Origin, err)
	}
	if k.Node != r.Origin || k.Network != r.Network {
		return fmt.Errorf("%w: key %s is %s's of %s, not the origin %s's of %s", ErrKey, r.KID, k.Node, k.Network, r.Origin, r.Network)
	}
	if !verifySig(k.Public, h[:], r.Sig) {
		return fmt.Errorf("%w: origin %s", ErrSignature, r.Origin)
	}
	for i, s := range r.Path {
		h, err := r.SegmentHash(i)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrMalformed, err)
		}
		k, err := v.cfg.Keys.SignerKey(ctx, s.KID, signed)
		if err != nil {
			return fmt.Errorf("%w: segment %d (%s): %w", ErrKey, i, s.Node, err)
		}
		if k.Node != s.Node {
			return fmt.Errorf("%w: segment %d: key %s is %s's, not %s's", ErrKey, i, s.KID, k.Node, s.Node)
		}
		if i == len(r.Path)-1 && k.Network != fromNetwork {
			// Node ids repeat across networks: the last segment is the
			// sender's own, of the network its session verified.
			return fmt.Errorf("%w: the last segment's key is of %s, the sender of %s", ErrKey, k.Network, fromNetwork)
		}
		if !verifySig(k.Public, h[:], s.Sig) {
			return fmt.Errorf("%w: segment %d (%s)", ErrSignature, i, s.Node)
		}
	}
	return nil
}

// Fresh checks r's signing time against the replay window and the future
// skew.
func (v *Validator) Fresh(r *Route) error {
	now := v.cfg.Clock()
	signed := r.Signed()
	if age := now.Sub(signed); age > v.cfg.ReplayWindow {
		return fmt.Errorf("%w: signed %s ago, the window is %s", ErrStale, age.Round(time.Second), v.cfg.ReplayWindow)
	}
	if signed.After(now.Add(v.cfg.FutureSkew)) {
		return fmt.Errorf("%w: signed %s in the future", ErrStale, signed.Sub(now).Round(time.Second))
	}
	return nil
}

// Origin is r's origin validation state against the view's route
// authorizations (of this node's network: a route of another network is
// NotFound).
func (v *Validator) Origin(r *Route) OriginState {
	if r.Network != v.cfg.Network {
		// This network's authorizations name this network's nodes: a
		// federated network's route of a prefix they cover is Invalid
		// (no origin of that network is authorized for it), else NotFound.
		return v.index().state(r.NLRI, "")
	}
	return v.index().state(r.NLRI, r.Origin)
}

// split is the node id and network of a session's peer key: a node id of
// this network, or a federated node's SPIFFE ID.
func (v *Validator) split(peer string) (string, string) {
	if id, err := identity.ParseSPIFFEID(peer); err == nil {
		return id.Name, id.Network
	}
	return peer, v.cfg.Network
}

// index is the authorization index of the current view, made again when
// the view changed.
func (v *Validator) index() *authIndex {
	view := v.cfg.View()
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.auths == nil || v.view != view {
		v.view, v.auths = view, newAuthIndex(view.RouteAuths())
	}
	return v.auths
}

// authIndex holds route authorizations by prefix.
type authIndex struct {
	by map[netip.Prefix][]fsm.RouteAuth
}

func newAuthIndex(auths []fsm.RouteAuth) *authIndex {
	ix := &authIndex{by: map[netip.Prefix][]fsm.RouteAuth{}}
	for _, a := range auths {
		p, err := netip.ParsePrefix(a.Prefix)
		if err != nil {
			continue // the state holds canonical prefixes only
		}
		ix.by[p] = append(ix.by[p], a)
	}
	return ix
}

// state is RFC 6811's procedure: the authorizations covering the prefix
// (equal or shorter), matched by origin and maximum length.
func (ix *authIndex) state(n NLRI, origin string) OriginState {
	p, ok := n.Prefix()
	if !ok {
		return NotFound
	}
	covered := false
	for bits := p.Bits(); bits >= 0; bits-- {
		q, _ := p.Addr().Prefix(bits)
		for _, a := range ix.by[q] {
			covered = true
			if p.Bits() <= a.MaxLength && slices.Contains(a.Origins, origin) {
				return Valid
			}
		}
	}
	if covered {
		return Invalid
	}
	return NotFound
}
