package trust

import (
	"github.com/keymesh/keymesh/fsm"
)

// View is the trust state a verifier reads. *fsm.Store (a root's live
// replica) and *State (an agent's followed copy) implement it.
type View interface {
	// Index is the state index the view reflects.
	Index() uint64
	// Network is the network the view is of.
	Network() string
	JWK(kid string) (fsm.JWK, bool)
	Node(id string) (fsm.Node, bool)
	Server(name string) (fsm.Server, bool)
	Revoked(kind fsm.RevocationKind, id string) (fsm.Revocation, bool)
	TrustAnchors() []fsm.TrustAnchor
	RouteAuths() []fsm.RouteAuth
	Policy() fsm.Policy
}

var (
	_ View = (*fsm.Store)(nil)
	_ View = (*State)(nil)
)
