package routing

import (
	"fmt"
	"net/netip"
	"time"
)

// Role is what a neighbour is to this node: the relationships of RFC 9234
// and internal (two nodes of one operator). The numbers are the session
// package's.
type Role uint8

// Roles.
const (
	RoleInternal Role = 0
	RolePeer     Role = 1
	RoleProvider Role = 2
	RoleCustomer Role = 3
)

func (r Role) String() string {
	switch r {
	case RoleProvider:
		return "provider"
	case RoleCustomer:
		return "customer"
	case RolePeer:
		return "peer"
	case RoleInternal:
		return "internal"
	}
	return fmt.Sprintf("role-%d", uint8(r))
}

// Defaults of a session's import policy.
const (
	DefaultMaxPrefix   = 1000
	DefaultWarnPercent = 90
	DefaultHoldDown    = 5 * time.Minute
)

// PeerPolicy is a session's import policy: the neighbour's role, whether
// routes whose origin is NotFound are taken (Invalid never are), and the
// maximum number of prefixes, the warning threshold and how long the
// session stays down past the maximum.
type PeerPolicy struct {
	Role           Role
	RejectNotFound bool
	MaxPrefix      int           // 0: DefaultMaxPrefix
	WarnPercent    int           // 0: DefaultWarnPercent
	HoldDown       time.Duration // 0: DefaultHoldDown
}

func (p PeerPolicy) withDefaults() PeerPolicy {
	if p.MaxPrefix == 0 {
		p.MaxPrefix = DefaultMaxPrefix
	}
	if p.WarnPercent == 0 {
		p.WarnPercent = DefaultWarnPercent
	}
	if p.HoldDown == 0 {
		p.HoldDown = DefaultHoldDown
	}
	return p
}

// Lock is a peer lock: routes for Prefix (or a more specific one) are
// taken from neighbour Via only.
type Lock struct {
	Prefix netip.Prefix
	Via    string
}

// ParseLock reads PREFIX=NODE.
func ParseLock(s string) (Lock, error) {
	for i := 0; i < len(s); i++ {
		if s[i] == '=' {
			n, err := ParseNLRI(s[:i])
			if err != nil {
				return Lock{}, err
			}
			p, ok := n.Prefix()
			if !ok {
				return Lock{}, fmt.Errorf("%w: a peer lock names a prefix, not %s", ErrNLRI, n)
			}
			if err := checkID("peer lock node", s[i+1:]); err != nil {
				return Lock{}, err
			}
			return Lock{Prefix: p, Via: s[i+1:]}, nil
		}
	}
	return Lock{}, fmt.Errorf("routing: peer lock %q is not PREFIX=NODE", trunc(s))
}

// Rejection reasons of import policy (what `keymesh routes list` shows).
var (
	ErrInvalidOrigin = fmt.Errorf("routing: origin not authorised (RFC 6811 invalid)")
	ErrNotFound      = fmt.Errorf("routing: no authorization covers the prefix, and the session takes only valid routes")
	ErrPeerLock      = fmt.Errorf("routing: peer lock")
	ErrLeak          = fmt.Errorf("routing: route leak (RFC 9234)")
	ErrLoop          = fmt.Errorf("routing: this node is in the path")
	ErrOlder         = fmt.Errorf("routing: an older sequence number than a route held")
)

// imports applies a session's import policy to a verified route from
// neighbour from (its role in pol), given its origin state; it returns
// whether the route carries Only-To-Customer on from here: marked by a
// hop, or learnt from a provider or a peer (RFC 9234 ingress).
func imports(r *Route, from, self string, pol PeerPolicy, state OriginState, locks []Lock) (otc bool, err error) {
	for _, n := range r.Nodes() {
		if n == self {
			return false, ErrLoop
		}
	}
	switch state {
	case Invalid:
		return false, ErrInvalidOrigin
	case NotFound:
		if pol.RejectNotFound {
			return false, ErrNotFound
		}
	}
	if p, ok := r.NLRI.Prefix(); ok {
		for _, l := range locks {
			if l.Prefix.Bits() <= p.Bits() && l.Prefix.Contains(p.Addr()) && l.Via != from {
				return false, fmt.Errorf("%w: %s is taken from %s only, it came from %s", ErrPeerLock, p, l.Via, from)
			}
		}
	}
	marked := ""
	for _, s := range r.Path {
		if s.OTC {
			marked = s.Node
			break
		}
	}
	switch pol.Role {
	case RoleCustomer:
		if marked != "" {
			return false, fmt.Errorf("%w: a customer sent a route %s marked Only-To-Customer", ErrLeak, marked)
		}
	case RolePeer:
		if marked != "" && marked != nodeOf(from) {
			return false, fmt.Errorf("%w: a peer sent a route %s marked Only-To-Customer", ErrLeak, marked)
		}
		return true, nil
	case RoleProvider:
		return true, nil
	}
	return marked != "", nil
}

// exports says whether a route this node holds (learnt from a neighbour
// of role from, "" and internal for its own, otc as imports said) goes to
// a neighbour of role to: routes from providers and peers, and those
// marked Only-To-Customer, go to customers and internal neighbours only.
func exports(otc bool, to Role) bool {
	if !otc {
		return true
	}
	return to == RoleCustomer || to == RoleInternal
}

// marks says whether this node marks the route Only-To-Customer in the
// segment it signs for a neighbour of role to (RFC 9234 egress: to a
// customer or a peer), or carries the mark on.
func marks(otc bool, to Role) bool {
	return otc || to == RoleCustomer || to == RolePeer
}

// MustPrefix is a prefix constant; it panics on an error.
func MustPrefix(s string) netip.Prefix {
	p, ok := MustNLRI(s).Prefix()
	if !ok {
		panic("routing: " + s + " is not a prefix")
	}
	return p
}
