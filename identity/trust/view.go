package trust

import (
	"slices"

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
	// FederatedKey finds a key of a federated network's node (the JWKS
	// its roots publish, followed by this network's leader).
	FederatedKey(kid string) (network string, key fsm.FederatedKey, ok bool)
	RouteAuths() []fsm.RouteAuth
	Policy() fsm.Policy
}

var (
	_ View = (*fsm.Store)(nil)
	_ View = (*State)(nil)
)

// Narrow is v with its own network's access list cut to accept: the own
// network, and the networks of accept that v's list holds too. A node
// that accepts fewer networks than its network does runs on it; it never
// widens v's list. An empty accept returns v.
func Narrow(v View, accept []string) View {
	if len(accept) == 0 {
		return v
	}
	return &narrowed{View: v, accept: accept}
}

type narrowed struct {
	View
	accept []string
}

func (n *narrowed) TrustAnchors() []fsm.TrustAnchor {
	out := n.View.TrustAnchors()
	own := n.View.Network()
	for i, a := range out {
		if a.Network != own {
			continue
		}
		list := []string{own}
		for _, net := range a.Accept {
			if net != own && slices.Contains(n.accept, net) {
				list = append(list, net)
			}
		}
		out[i].Accept = list
	}
	return out
}
