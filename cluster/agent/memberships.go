package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"

	"github.com/keymesh/keymesh/ca"
	"github.com/keymesh/keymesh/identity/trust"
	"github.com/keymesh/keymesh/session"
)

// A node may be a member of several networks, each a root cluster of its
// own. Its data directory holds its first membership (node.json, node.key,
// node.pem, ca.pem, trust.json, agent.sock) and one directory of the same
// files for each other network it joined, networks/NETWORK: one key and
// certificate per network, never shared, so that revoking the node in one
// network revokes nothing in another and no network's certificate vouches
// for a key another network certified.

// dirNetworks holds the data directories of a node's other memberships.
const dirNetworks = "networks"

// Errors of memberships.
var (
	// ErrNoMembership: the node is not a member of that network.
	ErrNoMembership = errors.New("agent: the node is not a member of that network")
	// ErrExclusive: a network requires exclusive membership, and its node
	// is (or would be) a member of another network too.
	ErrExclusive = errors.New("agent: the network requires exclusive membership")
	// ErrTooManyMemberships: a node is a member of MaxMemberships other
	// networks already.
	ErrTooManyMemberships = errors.New("agent: the node is a member of as many networks as a node may be")
)

// MaxMemberships is how many networks a node may be a member of besides
// its first (what an OPEN names: session.MaxMemberships).
const MaxMemberships = session.MaxMemberships

// exclusive reports whether the trust state the agent of the membership
// in dir last kept (trust.json) says that its network requires exclusive
// membership; false when it kept none.
func exclusive(dir, network string) bool {
	doc, err := ReadTrustFile(dir, network)
	if err != nil {
		return false
	}
	st, err := trust.NewState(doc)
	return err == nil && trust.Exclusive(st, network)
}

// MembershipDir is the data directory of the node in dir's membership of
// network: dir itself when its first membership is of network or there is
// none yet, else networks/NETWORK under it.
func MembershipDir(dir, network string) string {
	if st, err := readState(dir); err != nil || st.Network == network {
		return dir
	}
	return filepath.Join(dir, dirNetworks, network)
}

// Membership is one network a node is a member of.
type Membership struct {
	State
	// Dir is its data directory: the node's own for its first membership.
	Dir string
}

// Memberships lists the networks the node in dir is a member of (of any
// status): its first membership, then the others by network name.
func Memberships(dir string) ([]Membership, error) {
	st, err := readState(dir)
	if err != nil {
		return nil, err
	}
	out := []Membership{{State: st, Dir: dir}}
	entries, err := os.ReadDir(filepath.Join(dir, dirNetworks))
	if errors.Is(err, fs.ErrNotExist) {
		return out, nil
	}
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Name() < entries[j].Name() })
	for _, e := range entries {
		if !e.IsDir() || ca.ValidateNetwork(e.Name()) != nil {
			continue
		}
		sub := filepath.Join(dir, dirNetworks, e.Name())
		st, err := readState(sub)
		if errors.Is(err, ErrNoNode) {
			continue // a join that failed before its registration was taken
		}
		if err != nil {
			return nil, err
		}
		if st.Network == out[0].Network {
			return nil, fmt.Errorf("agent: %s holds a node of %s, the network of %s itself; remove it", sub, st.Network, dir)
		}
		if st.Network != e.Name() {
			return nil, fmt.Errorf("agent: %s holds a node of network %s; it belongs in %s", sub, st.Network, filepath.Join(dir, dirNetworks, st.Network))
		}
		out = append(out, Membership{State: st, Dir: sub})
	}
	return out, nil
}

// FindMembership returns the node in dir's membership of network; "" is
// its first.
func FindMembership(dir, network string) (Membership, error) {
	ms, err := Memberships(dir)
	if err != nil {
		return Membership{}, err
	}
	if network == "" {
		return ms[0], nil
	}
	for _, m := range ms {
		if m.Network == network {
			return m, nil
		}
	}
	var have []string
	for _, m := range ms {
		have = append(have, m.Network)
	}
	return Membership{}, fmt.Errorf("%w: %s (it is a member of %v; `keymesh node join --network %s --data-dir %s` joins it)", ErrNoMembership, network, have, network, dir)
}

// Accepts reports whether the trust state the membership's agent last
// kept (trust.json) puts network on its network's access list; false when
// it kept none. A node of several networks dials a peer of a network it
// is not a member of from the first membership that accepts it.
func (m Membership) Accepts(network string) bool {
	if network == m.Network {
		return true
	}
	doc, err := ReadTrustFile(m.Dir, m.Network)
	if err != nil {
		return false
	}
	st, err := trust.NewState(doc)
	if err != nil {
		return false
	}
	an, err := trust.Anchors(st, m.Network)
	return err == nil && slices.Contains(an.Accepted, network)
}

// Exclusive reports whether the trust state the membership's agent last
// kept says that its network requires exclusive membership.
func (m Membership) Exclusive() bool { return exclusive(m.Dir, m.Network) }
