package e2e

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keymesh/keymesh/cluster/api"
	"github.com/keymesh/keymesh/routing"
	"github.com/keymesh/keymesh/test/harness"
)

func pathIs(want ...string) func(*routing.RouteStatus) bool {
	return func(b *routing.RouteStatus) bool { return b != nil && slices.Equal(b.Path, want) }
}

func gone(b *routing.RouteStatus) bool { return b == nil }

// TestRoutesCrossTheMesh: agents as processes over real sessions. An
// announcement crosses a line of five agents, its path signed at every
// hop and valid against the route authorizations, and a withdrawal
// follows it; in a diamond the best path is chosen, and chosen again when
// an agent on it dies. Revoking a transit node or the origin takes the
// route from every agent downstream within p99 <= 1 s of the revoke call's
// return.
func TestRoutesCrossTheMesh(t *testing.T) {
	c := harness.StartCluster(t, bin, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if _, err := c.Client(c.Leader(10*time.Second)).AuthorizeRoute(ctx, api.RouteAuthRequest{Prefix: "10.50.0.0/16", Origins: []string{"line-1"}, MaxLength: 24}); err != nil {
		t.Fatal(err)
	}
	line := c.StartGraph("line", 5, func(j, i int) (string, bool) { return "", j == i-1 }, func(int) []string { return []string{"--log-level", "warn"} })
	for i, a := range line {
		c.WaitEstablished(a, min(2, 1+min(i, 4-i)), time.Minute)
	}
	start := time.Now()
	if err := line[0].Announce(ctx, "10.50.1.0/24"); err != nil {
		t.Fatal(err)
	}
	crossed := c.WaitBest(line[4], "10.50.1.0/24", 30*time.Second, "the route across the line", pathIs("line-1", "line-2", "line-3", "line-4"))
	t.Logf("an announcement crossed 4 hops in %s", crossed.Sub(start).Round(time.Millisecond))
	if b, _ := line[4].Best(ctx, "10.50.1.0/24"); b.State != "valid" {
		t.Fatalf("origin state %q, want valid: %+v", b.State, b)
	}
	if err := line[0].Withdraw(ctx, "10.50.1.0/24"); err != nil {
		t.Fatal(err)
	}
	c.WaitBest(line[4], "10.50.1.0/24", 30*time.Second, "the withdrawal across the line", gone)

	// The diamond: 2 and 3 dial 1, 4 dials 2 and 3.
	dia := c.StartGraph("dia", 4, func(j, i int) (string, bool) { return "", (i == 1 || i == 2) && j == 0 || i == 3 && j > 0 },
		func(int) []string { return []string{"--log-level", "warn"} })
	c.WaitEstablished(dia[3], 2, time.Minute)
	c.WaitEstablished(dia[0], 2, time.Minute)
	if err := dia[0].Announce(ctx, "service:web.prod"); err != nil {
		t.Fatal(err)
	}
	c.WaitBest(dia[3], "service:web.prod", 30*time.Second, "the best path, by the lower id", pathIs("dia-1", "dia-2"))
	c.KillAgent(dia[1])
	c.WaitBest(dia[3], "service:web.prod", 30*time.Second, "the other path once dia-2 died", pathIs("dia-1", "dia-3"))
	if err := dia[0].Withdraw(ctx, "service:web.prod"); err != nil {
		t.Fatal(err)
	}
	c.WaitBest(dia[3], "service:web.prod", 30*time.Second, "the withdrawal", gone)

	// Revocation: a transit node, then the origin.
	if err := line[0].Announce(ctx, "10.50.2.0/24"); err != nil {
		t.Fatal(err)
	}
	c.WaitBest(line[4], "10.50.2.0/24", 30*time.Second, "the second route", pathIs("line-1", "line-2", "line-3", "line-4"))
	var lat []time.Duration
	revoke := func(id string, downstream ...*harness.Agent) {
		if _, err := c.Client(c.Leader(10*time.Second)).Revoke(ctx, api.RevokeRequest{Kind: "node", ID: id, Reason: "stolen"}); err != nil {
			t.Fatal(err)
		}
		acked := time.Now()
		for _, a := range downstream {
			lat = append(lat, c.WaitBest(a, "10.50.2.0/24", 30*time.Second, "the route of a revoked "+id, gone).Sub(acked))
		}
	}
	revoke("line-3", line[3], line[4])
	if b, _ := line[1].Best(ctx, "10.50.2.0/24"); b == nil {
		t.Fatal("line-2, upstream of the revoked line-3, lost the route")
	}
	revoke("line-1", line[1])
	slices.Sort(lat)
	t.Logf("routes gone after a revocation: %s (max %s) after the revoke call returned", fmtDur(lat), lat[len(lat)-1].Round(time.Millisecond))
	if lat[len(lat)-1] > time.Second {
		t.Errorf("a route stayed %s after its node was revoked, want <= 1s", lat[len(lat)-1])
	}
}

func fmtDur(ds []time.Duration) string {
	var s []string
	for _, d := range ds {
		s = append(s, d.Round(time.Millisecond).String())
	}
	return strings.Join(s, ", ")
}
