package main

import (
	"slices"
	"testing"

	"github.com/keymesh/keymesh/cluster/agent"
	"github.com/keymesh/keymesh/session"
)

// TestSplitPeers: a node of two networks gives a peer named by a SPIFFE
// ID of one of its networks to that membership (by node id there), and a
// node id alone, or a peer of a network no membership is known to accept,
// to its first.
func TestSplitPeers(t *testing.T) {
	first := agent.Membership{State: agent.State{Network: "a.example"}, Dir: t.TempDir()}
	other := agent.Membership{State: agent.State{Network: "b.example"}, Dir: t.TempDir()}
	var peers []session.PeerConfig
	for _, id := range []string{"x", "spiffe://a.example/node/y", "spiffe://b.example/node/z", "spiffe://c.example/node/w"} {
		peers = append(peers, session.PeerConfig{ID: id})
	}
	ids := func(ps []session.PeerConfig) []string {
		var out []string
		for _, p := range ps {
			out = append(out, p.ID)
		}
		return out
	}
	got := splitPeers(peers, first, []agent.Membership{other})
	if a := ids(got["a.example"]); !slices.Equal(a, []string{"x", "spiffe://a.example/node/y", "spiffe://c.example/node/w"}) {
		t.Errorf("the first membership's peers: %v", a)
	}
	if b := ids(got["b.example"]); !slices.Equal(b, []string{"z"}) {
		t.Errorf("b's peers: %v", b)
	}
	// A node of one network keeps every peer as given.
	if a := ids(splitPeers(peers, first, nil)["a.example"]); !slices.Equal(a, ids(peers)) {
		t.Errorf("a node of one network: %v", a)
	}
}
