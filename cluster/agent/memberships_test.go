package agent_test

import (
	"bytes"
	"crypto"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/keymesh/keymesh/ca"
	"github.com/keymesh/keymesh/cluster"
	"github.com/keymesh/keymesh/cluster/agent"
	"github.com/keymesh/keymesh/cluster/api"
	"github.com/keymesh/keymesh/fsm"
	"github.com/keymesh/keymesh/identity/trust"
)

// TestJoinSecondNetwork: a data directory holding a node of one network
// takes the node's membership of another under networks/NETWORK, with a
// key and certificate of its own; the agent's helpers list and find the
// memberships. A second join into either network, or into another from
// a node whose network requires exclusive membership, is refused and
// writes nothing.
func TestJoinSecondNetwork(t *testing.T) {
	e1 := newEnv(t, cluster.Limits{})
	e2 := newEnvOf(t, "other.agent.example", cluster.Limits{})
	dir, res, err := e1.join("n1", e1.token(api.CreateJoinTokenRequest{}))
	if err != nil || res.Dir != dir {
		t.Fatalf("first join: %+v, %v", res, err)
	}
	// A second join that fails leaves the first membership as it was and
	// no networks/ behind.
	before, _ := os.ReadDir(dir)
	if _, _, err := e2.joinAt(dir, "n1", "kmjt.not-a-token"); err == nil {
		t.Fatal("a join with a bad token succeeded")
	}
	after, _ := os.ReadDir(dir)
	if len(after) != len(before) {
		t.Fatalf("a failed second join changed %s: %v, then %v", dir, before, after)
	}
	if _, err := os.Stat(agent.KeyPath(dir)); err != nil {
		t.Fatalf("the first membership's key: %v", err)
	}
	_, res2, err := e2.joinAt(dir, "n1", e2.token(api.CreateJoinTokenRequest{}))
	sub := filepath.Join(dir, "networks", e2.network)
	if err != nil || res2.Dir != sub || res2.Status != fsm.RegistrationApproved || res2.Network != e2.network {
		t.Fatalf("second join: %+v, %v", res2, err)
	}
	k1, _ := ca.ReadKeyFile(agent.KeyPath(dir))
	k2, _ := ca.ReadKeyFile(agent.KeyPath(sub))
	if k1 == nil || k2 == nil || k1.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(k2.Public()) {
		t.Fatal("the memberships share a key, or lack one")
	}
	if fi, err := os.Stat(agent.KeyPath(sub)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("%s: %v, want mode 0600", agent.KeyPath(sub), err)
	}
	ms, err := agent.Memberships(dir)
	if err != nil || len(ms) != 2 || ms[0].Network != network || ms[0].Dir != dir || ms[1].Network != e2.network || ms[1].Dir != sub {
		t.Fatalf("Memberships: %+v, %v", ms, err)
	}
	if m, err := agent.FindMembership(dir, e2.network); err != nil || m.Dir != sub {
		t.Fatalf("FindMembership(%s): %+v, %v", e2.network, m, err)
	}
	if m, err := agent.FindMembership(dir, ""); err != nil || m.Dir != dir {
		t.Fatalf("FindMembership(\"\"): %+v, %v", m, err)
	}
	if _, err := agent.FindMembership(dir, "third.example"); !errors.Is(err, agent.ErrNoMembership) {
		t.Fatalf("FindMembership of a network it is not in: %v", err)
	}
	if got := agent.MembershipDir(dir, e2.network); got != sub {
		t.Fatalf("MembershipDir: %s", got)
	}
	if got := agent.MembershipDir(dir, network); got != dir {
		t.Fatalf("MembershipDir of the first: %s", got)
	}
	for _, e := range []*env{e1, e2} {
		if _, _, err := e.joinAt(dir, "n1", e.token(api.CreateJoinTokenRequest{})); !errors.Is(err, agent.ErrNodeExists) {
			t.Fatalf("a second join into %s: %v, want ErrNodeExists", e.network, err)
		}
	}
	// A stray directory under networks/ is not a membership.
	if err := os.MkdirAll(filepath.Join(dir, "networks", "not a network"), 0o700); err != nil {
		t.Fatal(err)
	}
	if ms, err := agent.Memberships(dir); err != nil || len(ms) != 2 {
		t.Fatalf("Memberships with a stray directory: %+v, %v", ms, err)
	}

	// networks/ holding the first network is a damaged data directory.
	if err := os.MkdirAll(filepath.Join(dir, "networks", network), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(dir, "node.json"), filepath.Join(dir, "networks", network, "node.json")); err != nil {
		t.Fatal(err)
	}
	if _, err := agent.Memberships(dir); err == nil {
		t.Fatal("Memberships took networks/ holding the first network")
	}
	if err := os.RemoveAll(filepath.Join(dir, "networks", network)); err != nil {
		t.Fatal(err)
	}

	// Past MaxMemberships other networks, a join is refused (the
	// memberships past the one of b are copies of its node.json).
	raw, err := os.ReadFile(filepath.Join(sub, "node.json"))
	if err != nil {
		t.Fatal(err)
	}
	var fake []string
	for i := range agent.MaxMemberships - 1 {
		n := fmt.Sprintf("n%02d.fake.example", i)
		d := filepath.Join(dir, "networks", n)
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "node.json"), bytes.Replace(raw, []byte(e2.network), []byte(n), 1), 0o600); err != nil {
			t.Fatal(err)
		}
		fake = append(fake, d)
	}
	if ms, err := agent.Memberships(dir); err != nil || len(ms) != agent.MaxMemberships+1 {
		t.Fatalf("memberships with the copies: %d, %v", len(ms), err)
	}
	if _, _, err := newEnvOf(t, "over.agent.example", cluster.Limits{}).joinAt(dir, "n1", "kmjt.unused"); !errors.Is(err, agent.ErrTooManyMemberships) {
		t.Fatalf("a join past %d other networks: %v, want ErrTooManyMemberships", agent.MaxMemberships, err)
	}
	for _, d := range fake {
		if err := os.RemoveAll(d); err != nil {
			t.Fatal(err)
		}
	}

	// A node whose network requires exclusive membership (as its agent's
	// trust.json says) joins no other, and its agent refuses to run
	// beside another membership.
	e3 := newEnvOf(t, "third.agent.example", cluster.Limits{})
	roots, err := ca.ReadCertsFile(agent.RootsPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	// The access list a membership's agent kept says which networks it
	// dials peers of.
	fed := trust.Delta{Network: network, Index: 6, Reset: true, Put: trust.Records{Anchors: []fsm.TrustAnchor{
		{Network: network, Roots: [][]byte{roots[0].Raw}, Accept: []string{"fed.example", network}},
		{Network: "fed.example", Roots: [][]byte{roots[0].Raw}, Accept: []string{"fed.example"}}}}}
	if ms[0].Accepts("fed.example") {
		t.Fatal("a membership without a kept trust state accepts another network")
	}
	if err := agent.WriteTrustFile(dir, fed); err != nil {
		t.Fatal(err)
	}
	if !ms[0].Accepts("fed.example") || !ms[0].Accepts(network) || ms[0].Accepts("third.example") || ms[1].Accepts("fed.example") {
		t.Fatal("Accepts does not follow the kept access lists")
	}
	// Of any membership: b's kept state requiring it refuses a third.
	subRoots, err := ca.ReadCertsFile(agent.RootsPath(sub))
	if err != nil {
		t.Fatal(err)
	}
	if err := agent.WriteTrustFile(sub, trust.Delta{Network: e2.network, Index: 3, Reset: true, Put: trust.Records{Anchors: []fsm.TrustAnchor{
		{Network: e2.network, Roots: [][]byte{subRoots[0].Raw}, Accept: []string{e2.network}, Exclusive: true}}}}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e3.joinAt(dir, "n1", e3.token(api.CreateJoinTokenRequest{})); !errors.Is(err, agent.ErrExclusive) {
		t.Fatalf("a join beside a membership of b, which requires exclusive membership: %v", err)
	}
	if err := os.Remove(agent.TrustPath(sub)); err != nil {
		t.Fatal(err)
	}
	doc := trust.Delta{Network: network, Index: 7, Reset: true, Put: trust.Records{Anchors: []fsm.TrustAnchor{
		{Network: network, Roots: [][]byte{roots[0].Raw}, Accept: []string{network}, Exclusive: true}}}}
	if err := agent.WriteTrustFile(dir, doc); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e3.joinAt(dir, "n1", e3.token(api.CreateJoinTokenRequest{})); !errors.Is(err, agent.ErrExclusive) {
		t.Fatalf("a join beside a membership of an exclusive network: %v, want ErrExclusive", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "networks", e3.network)); err == nil {
		t.Fatal("the refused join left a directory")
	}
	if _, err := agent.New(agent.RunConfig{DataDir: dir, Memberships: []string{e2.network}}); !errors.Is(err, agent.ErrExclusive) {
		t.Fatalf("an agent of an exclusive network beside another membership: %v, want ErrExclusive", err)
	}
	if _, err := agent.New(agent.RunConfig{DataDir: dir}); err != nil {
		t.Fatalf("the agent of an exclusive network alone: %v", err)
	}
}
