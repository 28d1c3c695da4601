package e2e

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/keymesh/keymesh/cluster/api"
	"github.com/keymesh/keymesh/test/harness"
)

func has(want ...string) func([]string) bool {
	return func(got []string) bool {
		for _, w := range want {
			if !slices.Contains(got, w) {
				return false
			}
		}
		return true
	}
}

func lacks(gone string) func([]string) bool {
	return func(got []string) bool { return !slices.Contains(got, gone) }
}

// TestBIRDValidatesAgainstKeymesh: BIRD 2, as a router operators run,
// takes the route authorizations over RTR from a root (a follower, not
// the leader) and from a node agent's --rtr-listen. roa_check says valid
// for the authorized origin AS, invalid for another AS or a prefix longer
// than the max length, unknown for an uncovered prefix; unauthorize takes
// it away. The time from the authorize call to BIRD's table holding it is
// measured over 50 changes.
func TestBIRDValidatesAgainstKeymesh(t *testing.T) {
	c := harness.Start(t, bin, harness.Config{Servers: 3, RTR: true})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	leader := c.Leader(10 * time.Second)
	cl := c.Client(leader)
	if _, err := cl.SetNetworkASN(ctx, 64500); err != nil {
		t.Fatal(err)
	}
	var follower *harness.Root
	for _, r := range c.Roots {
		if r != leader {
			follower = r
			break
		}
	}
	dir := c.JoinNode("rtr-1", api.CreateJoinTokenRequest{})
	rtrAgent := harness.FreePort(t)
	c.RunAgent("rtr-1", dir, "--rtr-listen", rtrAgent, "--log-level", "warn")
	bird := harness.StartBIRD(t, harness.RTRCache{Name: "root", Addr: follower.RTRAddr}, harness.RTRCache{Name: "agent", Addr: rtrAgent},
		harness.RTRCache{Name: "leader", Addr: leader.RTRAddr})

	if _, err := cl.AuthorizeRoute(ctx, api.RouteAuthRequest{Prefix: "10.60.0.0/16", Origins: []string{"rtr-1"}, MaxLength: 24}); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.AuthorizeRoute(ctx, api.RouteAuthRequest{Prefix: "2001:db8:60::/48", Origins: []string{"rtr-1"}, ASN: 64501}); err != nil {
		t.Fatal(err)
	}
	for _, tbl := range []string{"root", "agent"} {
		bird.WaitROAs(tbl+"4", 30*time.Second, "the IPv4 authorization", has("10.60.0.0/16-24 AS64500"))
		bird.WaitROAs(tbl+"6", 30*time.Second, "the IPv6 authorization", has("2001:db8:60::/48-48 AS64501"))
		for _, check := range []struct {
			table, prefix string
			asn           uint32
			want          string
		}{
			{tbl + "4", "10.60.7.0/24", 64500, harness.ROAValid},
			{tbl + "4", "10.60.0.0/16", 64500, harness.ROAValid},
			{tbl + "4", "10.60.7.0/24", 64666, harness.ROAInvalid},
			{tbl + "4", "10.60.7.0/25", 64500, harness.ROAInvalid},
			{tbl + "4", "10.99.0.0/16", 64500, harness.ROAUnknown},
			{tbl + "6", "2001:db8:60::/48", 64501, harness.ROAValid},
			{tbl + "6", "2001:db8:60::/48", 64500, harness.ROAInvalid},
			{tbl + "6", "2001:db8:61::/48", 64501, harness.ROAUnknown},
		} {
			if got := bird.ROACheck(check.table, check.prefix, check.asn); got != check.want {
				t.Errorf("roa_check(%s, %s, AS%d) = %s, want %s", check.table, check.prefix, check.asn, got, check.want)
			}
		}
	}
	if _, err := cl.UnauthorizeRoute(ctx, "10.60.0.0/16", nil); err != nil {
		t.Fatal(err)
	}
	for _, tbl := range []string{"root4", "agent4"} {
		bird.WaitROAs(tbl, 30*time.Second, "the withdrawal", lacks("10.60.0.0/16-24 AS64500"))
		if got := bird.ROACheck(tbl, "10.60.7.0/24", 64500); got != harness.ROAUnknown {
			t.Errorf("after unauthorize, roa_check(%s, 10.60.7.0/24, AS64500) = %s, want unknown", tbl, got)
		}
	}

	// 50 changes: from the authorize call to BIRD's table holding the
	// authorization, through the leader's RTR and through a follower's (a
	// follower applies an entry when the leader's next message tells it
	// the entry is committed: up to a heartbeat later).
	for n, via := range []string{"leader", "root"} {
		var took []time.Duration
		for i := range 50 {
			prefix := fmt.Sprintf("10.%d.%d.0/24", 61+n, i)
			start := time.Now()
			if _, err := cl.AuthorizeRoute(ctx, api.RouteAuthRequest{Prefix: prefix, Origins: []string{"rtr-1"}}); err != nil {
				t.Fatal(err)
			}
			seen := bird.WaitROAs(via+"4", 10*time.Second, prefix, has(prefix+"-24 AS64500"))
			took = append(took, seen.Sub(start))
		}
		sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
		p50, p99 := took[len(took)/2], took[len(took)*99/100]
		t.Logf("authorize call -> BIRD's ROA table via the %s's RTR, 50 changes: p50 %s, p99 %s", map[string]string{"leader": "leader", "root": "follower"}[via],
			p50.Round(time.Millisecond), p99.Round(time.Millisecond))
		if p99 > time.Second {
			t.Errorf("p99 %s: a router must see an authorization within a second", p99)
		}
	}

	// The follower root dies (kill -9) while an authorization is made, and
	// starts again on its --rtr-addr: BIRD reconnects and catches up.
	c.Kill(follower)
	if _, err := cl.AuthorizeRoute(ctx, api.RouteAuthRequest{Prefix: "10.63.0.0/16", Origins: []string{"rtr-1"}}); err != nil {
		t.Fatal(err)
	}
	c.Restart(follower)
	bird.WaitROAs("root4", 30*time.Second, "the authorization made while the root was down", has("10.63.0.0/16-16 AS64500", "10.62.49.0/24-24 AS64500"))
}
