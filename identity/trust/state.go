package trust

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/keymesh/keymesh/fsm"
)

// Errors of Apply.
var (
	// ErrGap: the Delta applies on another index than the State's; ask for
	// a full document.
	ErrGap = errors.New("trust: the delta does not start at this state's index")
	// ErrOtherNetwork: the Delta is of another network.
	ErrOtherNetwork = errors.New("trust: the delta is of another network")
	// ErrBadDelta: the Delta is malformed (a record without its key, an
	// index before its base).
	ErrBadDelta = errors.New("trust: malformed delta")
)

// Delta is what a root answers a follower: the trust records that changed
// after Since and the keys deleted since, bringing a view from Since to
// Index; or, with Reset, a full document that replaces the view.
//
// Keys are those of fsm.Changes: the network of an anchor, "kind:id" of a
// revocation, a kid, a node id, a server name, a prefix.
type Delta struct {
	Network string      `json:"network"`
	Since   uint64      `json:"since"`
	Index   uint64      `json:"index"`
	Reset   bool        `json:"reset,omitempty"`
	Put     Records     `json:"put"`
	Deleted DeletedKeys `json:"deleted"`
	// Bulletins, on a delta with revocations, are the answering root's
	// signed bulletins of them (session/gossip.Bulletin, encoded; as many
	// as it takes to fit gossip messages): the follower applies the delta
	// and spreads the bulletins by gossip, to the nodes that cannot reach
	// a root. They are not part of the state.
	Bulletins [][]byte `json:"bulletins,omitempty"`
}

// Records are trust records in a Delta, each table sorted by key.
type Records struct {
	Anchors     []fsm.TrustAnchor `json:"anchors,omitempty"`
	Revocations []fsm.Revocation  `json:"revocations,omitempty"`
	JWKS        []fsm.JWK         `json:"jwks,omitempty"`
	Nodes       []fsm.Node        `json:"nodes,omitempty"`
	Servers     []fsm.Server      `json:"servers,omitempty"`
	RouteAuths  []fsm.RouteAuth   `json:"route_auths,omitempty"`
	// Policy is the policy set when it changed (always in a full document).
	Policy *fsm.Policy `json:"policy,omitempty"`
}

// DeletedKeys are the keys a Delta deletes, per table.
type DeletedKeys struct {
	Anchors     []string `json:"anchors,omitempty"`
	Revocations []string `json:"revocations,omitempty"`
	JWKS        []string `json:"jwks,omitempty"`
	Nodes       []string `json:"nodes,omitempty"`
	Servers     []string `json:"servers,omitempty"`
	RouteAuths  []string `json:"route_auths,omitempty"`
}

// Empty reports whether the delta changes nothing.
func (d Delta) Empty() bool {
	p, k := d.Put, d.Deleted
	return !d.Reset && p.Policy == nil &&
		len(p.Anchors)+len(p.Revocations)+len(p.JWKS)+len(p.Nodes)+len(p.Servers)+len(p.RouteAuths) == 0 &&
		len(k.Anchors)+len(k.Revocations)+len(k.JWKS)+len(k.Nodes)+len(k.Servers)+len(k.RouteAuths) == 0
}

// RevocationKey is the key of a revocation in a Delta and in fsm.Changes.
func RevocationKey(kind fsm.RevocationKind, id string) string { return string(kind) + ":" + id }

// trustTables are the tables of the replicated state in the trust view.
var trustTables = []fsm.Table{fsm.TableTrustAnchors, fsm.TableRevocations, fsm.TableJWKS, fsm.TableNodes,
	fsm.TableServers, fsm.TableRouteAuths, fsm.TablePolicy}

// DeltaFrom builds the answer to a follower at index since from one
// consistent read of a root's replica: a full document when since is 0,
// when full is set, or when the replica's change history no longer covers
// since; the changes after since otherwise. A follower ahead of the
// replica gets an empty delta at its own index.
func DeltaFrom(r fsm.Reader, since uint64, full bool) Delta {
	d := Delta{Network: r.Network(), Since: since, Index: r.Index()}
	if since >= d.Index && since > 0 && !full {
		d.Index = since
		return d
	}
	var ch fsm.Changes
	if since > 0 && !full {
		ch = r.Changes(since)
	}
	if since == 0 || full || ch.Reset {
		d.Since, d.Reset = 0, true
		pol := r.Policy()
		d.Put = Records{Anchors: r.TrustAnchors(), Revocations: r.Revocations(), JWKS: r.JWKS(), Nodes: r.Nodes(),
			Servers: r.Servers(), RouteAuths: r.RouteAuths(), Policy: &pol}
		return d
	}
	for _, t := range trustTables {
		tc := ch.Table(t)
		for _, k := range tc.Put {
			switch t {
			case fsm.TableTrustAnchors:
				d.Put.Anchors = appendFound(d.Put.Anchors, &d.Deleted.Anchors, k, r.TrustAnchor)
			case fsm.TableRevocations:
				d.Put.Revocations = appendFound(d.Put.Revocations, &d.Deleted.Revocations, k, r.Revocation)
			case fsm.TableJWKS:
				d.Put.JWKS = appendFound(d.Put.JWKS, &d.Deleted.JWKS, k, r.JWK)
			case fsm.TableNodes:
				d.Put.Nodes = appendFound(d.Put.Nodes, &d.Deleted.Nodes, k, r.Node)
			case fsm.TableServers:
				d.Put.Servers = appendFound(d.Put.Servers, &d.Deleted.Servers, k, r.Server)
			case fsm.TableRouteAuths:
				d.Put.RouteAuths = appendFound(d.Put.RouteAuths, &d.Deleted.RouteAuths, k, r.RouteAuth)
			case fsm.TablePolicy:
				pol := r.Policy()
				d.Put.Policy = &pol
			}
		}
		dk := &d.Deleted
		switch t {
		case fsm.TableTrustAnchors:
			dk.Anchors = append(dk.Anchors, tc.Deleted...)
		case fsm.TableRevocations:
			dk.Revocations = append(dk.Revocations, tc.Deleted...)
		case fsm.TableJWKS:
			dk.JWKS = append(dk.JWKS, tc.Deleted...)
		case fsm.TableNodes:
			dk.Nodes = append(dk.Nodes, tc.Deleted...)
		case fsm.TableServers:
			dk.Servers = append(dk.Servers, tc.Deleted...)
		case fsm.TableRouteAuths:
			dk.RouteAuths = append(dk.RouteAuths, tc.Deleted...)
		}
	}
	return d
}

// appendFound appends the record of key k, or (it is gone at this index)
// marks k deleted.
func appendFound[V any](list []V, deleted *[]string, k string, get func(string) (V, bool)) []V {
	if v, ok := get(k); ok {
		return append(list, v)
	}
	*deleted = append(*deleted, k)
	return list
}

// State is one version of a followed trust view: immutable, safe for
// concurrent use. Make the first with NewState from a full document and
// the next ones with Apply.
type State struct {
	index   uint64
	network string
	anchors layer[fsm.TrustAnchor]
	revs    layer[fsm.Revocation]
	jwks    layer[fsm.JWK]
	nodes   layer[fsm.Node]
	servers layer[fsm.Server]
	routes  layer[fsm.RouteAuth]
	policy  fsm.Policy
}

// Empty is a state of network at index 0 that holds nothing.
func Empty(network string) *State { return &State{network: network} }

// NewState makes the state of a full document (a Delta with Reset).
func NewState(d Delta) (*State, error) {
	if !d.Reset {
		return nil, fmt.Errorf("%w: a state starts from a full document", ErrGap)
	}
	return Empty(d.Network).Apply(d)
}

// Apply returns the state d brings s to; s does not change. A Delta with
// Reset replaces everything; any other must start at s's index (ErrGap)
// and be of s's network (ErrOtherNetwork). A Delta that changes nothing
// and does not move the index returns s itself.
func (s *State) Apply(d Delta) (*State, error) {
	if d.Network != s.network {
		return nil, fmt.Errorf("%w: %q, this view is of %q", ErrOtherNetwork, d.Network, s.network)
	}
	base := s
	if d.Reset {
		base = Empty(s.network)
	} else {
		if d.Since != s.index {
			return nil, fmt.Errorf("%w: it starts at %d, this state is at %d", ErrGap, d.Since, s.index)
		}
		if d.Index < d.Since {
			return nil, fmt.Errorf("%w: index %d before its base %d", ErrBadDelta, d.Index, d.Since)
		}
		if d.Index == s.index && d.Empty() {
			return s, nil
		}
	}
	n := *base
	n.index = d.Index
	var err error
	if n.anchors, err = n.anchors.with(d.Put.Anchors, func(a fsm.TrustAnchor) string { return a.Network }, d.Deleted.Anchors); err != nil {
		return nil, err
	}
	if n.revs, err = n.revs.with(d.Put.Revocations, func(r fsm.Revocation) string { return RevocationKey(r.Kind, r.ID) }, d.Deleted.Revocations); err != nil {
		return nil, err
	}
	if n.jwks, err = n.jwks.with(d.Put.JWKS, func(k fsm.JWK) string { return k.KID }, d.Deleted.JWKS); err != nil {
		return nil, err
	}
	if n.nodes, err = n.nodes.with(d.Put.Nodes, func(x fsm.Node) string { return x.ID }, d.Deleted.Nodes); err != nil {
		return nil, err
	}
	if n.servers, err = n.servers.with(d.Put.Servers, func(x fsm.Server) string { return x.Name }, d.Deleted.Servers); err != nil {
		return nil, err
	}
	if n.routes, err = n.routes.with(d.Put.RouteAuths, func(x fsm.RouteAuth) string { return x.Prefix }, d.Deleted.RouteAuths); err != nil {
		return nil, err
	}
	if d.Put.Policy != nil {
		n.policy = *d.Put.Policy
	}
	return &n, nil
}

// Document is the full document of s (a Delta with Reset), for persisting
// and for tests that compare.
func (s *State) Document() Delta {
	pol := s.policy
	return Delta{Network: s.network, Index: s.index, Reset: true, Put: Records{
		Anchors: s.anchors.values(), Revocations: s.revs.values(), JWKS: s.jwks.values(), Nodes: s.nodes.values(),
		Servers: s.servers.values(), RouteAuths: s.routes.values(), Policy: &pol}}
}

// Index is the state index s reflects (0 for Empty).
func (s *State) Index() uint64 { return s.index }

// Network is the network s is of.
func (s *State) Network() string { return s.network }

func (s *State) JWK(kid string) (fsm.JWK, bool)        { return s.jwks.get(kid) }
func (s *State) Node(id string) (fsm.Node, bool)       { return s.nodes.get(id) }
func (s *State) Server(name string) (fsm.Server, bool) { return s.servers.get(name) }
func (s *State) TrustAnchors() []fsm.TrustAnchor       { return s.anchors.values() }

// FederatedKey finds kid among the federated networks' keys.
func (s *State) FederatedKey(kid string) (string, fsm.FederatedKey, bool) {
	for _, a := range s.anchors.values() {
		if k, ok := fsm.FindFederatedKey(a.Keys, kid); ok {
			return a.Network, k, true
		}
	}
	return "", fsm.FederatedKey{}, false
}
func (s *State) RouteAuths() []fsm.RouteAuth { return s.routes.values() }
func (s *State) Policy() fsm.Policy          { return s.policy }

// Revoked answers for kind and id.
func (s *State) Revoked(kind fsm.RevocationKind, id string) (fsm.Revocation, bool) {
	return s.revs.get(RevocationKey(kind, id))
}

// JWKS lists the keys of s, sorted by kid.
func (s *State) JWKS() []fsm.JWK { return s.jwks.values() }

// Nodes lists the nodes of s, sorted by id.
func (s *State) Nodes() []fsm.Node { return s.nodes.values() }

// Servers lists the root servers of s, sorted by name.
func (s *State) Servers() []fsm.Server { return s.servers.values() }

// Revocations lists the revocations of s, sorted by key.
func (s *State) Revocations() []fsm.Revocation { return s.revs.values() }

// Sizes are the record counts of s.
func (s *State) Sizes() (revocations, jwks, nodes int) {
	return s.revs.len(), s.jwks.len(), s.nodes.len()
}

// layer is a table of a State: a base shared between versions and the
// changes of this version over it. Neither map is written once the State
// is published.
type layer[V any] struct {
	base map[string]V
	over map[string]change[V]
	n    int // records
}

type change[V any] struct {
	v    V
	gone bool
}

func (l layer[V]) get(k string) (V, bool) {
	if c, ok := l.over[k]; ok {
		return c.v, !c.gone
	}
	v, ok := l.base[k]
	return v, ok
}

func (l layer[V]) len() int { return l.n }

// with returns l with puts (keyed by key) and deletions; l is unchanged.
// The overlay is copied (it is small); once it passes an eighth of the
// base (at least 64 entries) both merge into a new base.
func (l layer[V]) with(puts []V, key func(V) string, dels []string) (layer[V], error) {
	if len(puts) == 0 && len(dels) == 0 {
		return l, nil
	}
	n := layer[V]{base: l.base, over: make(map[string]change[V], len(l.over)+len(puts)+len(dels)), n: l.n}
	maps.Copy(n.over, l.over)
	for _, k := range dels {
		if _, ok := n.get(k); ok {
			n.n--
		}
		n.over[k] = change[V]{gone: true}
	}
	for _, v := range puts {
		k := key(v)
		if k == "" {
			return l, fmt.Errorf("%w: a record without its key", ErrBadDelta)
		}
		if _, ok := n.get(k); !ok {
			n.n++
		}
		n.over[k] = change[V]{v: v}
	}
	if len(n.over) > max(64, len(n.base)/8) {
		n = n.merged()
	}
	return n, nil
}

// merged folds the overlay into a new base.
func (l layer[V]) merged() layer[V] {
	base := make(map[string]V, l.n)
	for k, v := range l.base {
		if _, changed := l.over[k]; !changed {
			base[k] = v
		}
	}
	for k, c := range l.over {
		if !c.gone {
			base[k] = c.v
		}
	}
	return layer[V]{base: base, n: len(base)}
}

// values lists the records sorted by key.
func (l layer[V]) values() []V {
	keys := make([]string, 0, l.n)
	for k := range l.base {
		if _, changed := l.over[k]; !changed {
			keys = append(keys, k)
		}
	}
	for k, c := range l.over {
		if !c.gone {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, cmp.Compare[string])
	out := make([]V, 0, len(keys))
	for _, k := range keys {
		v, _ := l.get(k)
		out = append(out, v)
	}
	return out
}
