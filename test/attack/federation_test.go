package attack

import (
	"net/http"
	"testing"
	"time"

	"github.com/keymesh/keymesh/cluster/api"
	"github.com/keymesh/keymesh/identity"
	"github.com/keymesh/keymesh/test/harness"
)

// TestFederationAttacks: once network a federates network b (its anchor,
// and b's keys followed from b's roots), what b's node, or whoever holds
// its key, may try on a's roots. Its keys verify in a for peering only:
// a token under it is refused by a's roots whatever principal it claims
// (NODE: another network's; ADMIN or NODE_CUSTODIAN: a federated key
// carries NODE alone), its certificate is refused too, also when a has a
// node of the same id (a's API verifies client certificates against its
// own roots alone); and nothing changes in a's state.
func TestFederationAttacks(t *testing.T) {
	A := harness.Start(t, bin, harness.Config{Servers: 1, Network: "a.attack.keymesh.test"})
	B := harness.Start(t, bin, harness.Config{Servers: 1, Network: "b.attack.keymesh.test"})
	ctx := ctxT(t, 2*time.Minute)
	admin := A.Client(A.Roots[0])
	if _, err := admin.PutAnchor(ctx, B.Network, readFile(t, B.CAFile()), B.Roots[0].APIAddr); err != nil {
		t.Fatal(err)
	}
	evil := join(t, B, "twin", "")
	join(t, A, "twin", "") // a's own node of the same id
	A.WaitFederatedKeys(B.Network, 30*time.Second)
	before := converged(t, A)

	for _, tc := range []struct {
		principal identity.Principal
		code      string
	}{
		{identity.PrincipalNode, api.CodeForbidden},
		{identity.PrincipalAdmin, api.CodeTokenRefused},
		{identity.PrincipalNodeCustodian, api.CodeTokenRefused},
	} {
		cl := evil.client(t, A, A.Roots[0], evil.bearer(t, A.Network, tc.principal))
		_, err := cl.Anchors(ctx)
		refused(t, "b's node's "+string(tc.principal)+" token reading a's trust anchors", err, http.StatusForbidden, tc.code)
		_, err = cl.CreateJoinToken(ctx, api.CreateJoinTokenRequest{Kind: "node"})
		refused(t, "b's node's "+string(tc.principal)+" token making a join token at a", err, http.StatusForbidden, tc.code)
	}
	cl := evil.client(t, A, A.Roots[0], "")
	_, err := cl.Trust(ctx, 0, 0, true)
	refused(t, "b's node's certificate reading a's trust state", err, http.StatusUnauthorized, api.CodeUnauthorized)
	_, err = cl.GossipKeys(ctx, 0, 0)
	refused(t, "b's node's certificate (a has a node of its id) asking a's gossip keys", err, http.StatusUnauthorized, api.CodeUnauthorized)
	if after := converged(t, A); after != before {
		t.Fatal("a federated node's refused calls changed a's state")
	}
}
