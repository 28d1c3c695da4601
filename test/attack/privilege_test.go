package attack

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/keymesh/keymesh/ca"
	"github.com/keymesh/keymesh/cluster/api"
	"github.com/keymesh/keymesh/cluster/client"
	"github.com/keymesh/keymesh/identity"
	"github.com/keymesh/keymesh/test/harness"
)

// TestCustodianCannotTakeTheCA is the probe that found a NODE_CUSTODIAN
// making itself a root server: a root-join token would have brought it an
// intermediate signed by the AS root, the seal key and the sealed root
// key. A custodian, by bearer token or by its client certificate, gets no
// root-join token and no token for a principal beyond NODE and USER, not
// even where a policy lets it create any token; it approves and revokes
// only what belongs to nodes and users, and writes no policy.
func TestCustodianCannotTakeTheCA(t *testing.T) {
	c := harness.StartCluster(t, bin, 3)
	ctx := ctxT(t, 3*time.Minute)
	cust := join(t, c, "custodian-1", "NODE_CUSTODIAN")
	data := join(t, c, "data-1", "DATA_CUSTODIAN")
	plain := join(t, c, "plain-1", "NODE")
	// Every call goes through one root server, so that each reads the
	// policies written just before (a write acknowledged through a server
	// is applied there).
	r := c.Roots[1]
	admin := c.Client(r)
	before := map[string]bool{}
	toks, err := admin.JoinTokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range toks {
		before[tok.ID] = true
	}
	ways := []struct {
		name string
		cl   *client.Client
	}{
		{"bearer", cust.client(t, c, r, cust.bearer(t, c.Network, identity.PrincipalNodeCustodian))},
		{"certificate", cust.client(t, c, r, "")},
	}
	for _, way := range ways {
		t.Run(way.name, func(t *testing.T) {
			cl := way.cl
			for _, req := range []api.CreateJoinTokenRequest{
				{Kind: "root"},
				{Kind: "node", Principal: "ADMIN"},
				{Kind: "node", Principal: "DATA_CUSTODIAN"},
				{Kind: "node", Principal: "NODE_CUSTODIAN"},
			} {
				_, err := cl.CreateJoinToken(ctx, req)
				ae := refused(t, "custodian makes a "+req.Kind+" token for "+req.Principal, err, http.StatusForbidden, "forbidden")
				if !strings.Contains(ae.Message, "token.create") {
					t.Errorf("the refusal does not name what was refused: %s", ae.Message)
				}
			}
			// A node token made without a principal is a NODE token, and
			// registers a NODE only.
			tok, err := cl.CreateJoinToken(ctx, api.CreateJoinTokenRequest{Kind: "node"})
			if err != nil || tok.Principal != "NODE" {
				t.Fatalf("custodian's node token without a principal: %+v, %v", tok.JoinTokenInfo, err)
			}
			_, err = cl.Register(ctx, api.RegisterRequest{CSR: csrFor(t, c.Network, "escalator-"+way.name), NodeID: "escalator-" + way.name,
				Token: tok.Secret, Principal: "ADMIN"})
			refused(t, "registration for ADMIN with the custodian's token", err, http.StatusForbidden, "token_constraint")

			// Approvals: a node that asked for ADMIN is not approved as
			// ADMIN by a custodian; as NODE it may be.
			id := "asks-admin-" + way.name
			pending, err := cl.Register(ctx, api.RegisterRequest{CSR: csrFor(t, c.Network, id), NodeID: id, Principal: "ADMIN"})
			if err != nil || pending.Registration.Status != "pending" {
				t.Fatalf("registration asking for ADMIN: %+v, %v", pending, err)
			}
			_, err = cl.Approve(ctx, pending.Registration.ID)
			refused(t, "custodian approves an ADMIN registration", err, http.StatusForbidden, "forbidden")
			_, err = cl.ApproveRequest(ctx, pending.Registration.ID, api.ApproveRequest{Principal: "DATA_CUSTODIAN"})
			refused(t, "custodian approves it as DATA_CUSTODIAN", err, http.StatusForbidden, "forbidden")
			ok, err := cl.ApproveRequest(ctx, pending.Registration.ID, api.ApproveRequest{Principal: "NODE"})
			if err != nil || ok.Registration.Principal != "NODE" {
				t.Fatalf("custodian approves it as NODE: %+v, %v", ok.Registration, err)
			}

			// Revocations: nothing of a root server or of an operator.
			issuer, err := ca.ReadCertsFile(c.Roots[0].Dir + "/issuer.pem")
			if err != nil {
				t.Fatal(err)
			}
			adminKID := adminKeyID(t, c)
			for _, rev := range []api.RevokeRequest{
				{Kind: "cert", ID: identity.SerialHex(issuer[0])},
				{Kind: "key", ID: adminKID},
				{Kind: "node", ID: data.id},
				{Kind: "cert", ID: identity.SerialHex(data.chain[0])},
				{Kind: "node", ID: cust.id},
			} {
				_, err := cl.Revoke(ctx, rev)
				refused(t, "custodian revokes "+rev.Kind+" "+rev.ID, err, http.StatusForbidden, "forbidden")
			}
			if _, err := cl.Revoke(ctx, api.RevokeRequest{Kind: "token", ID: "jti-" + way.name}); err != nil {
				t.Fatalf("custodian revokes a token id: %v", err)
			}
			// Trust anchors and route authorizations: not a custodian's.
			_, err = cl.PutAnchor(ctx, "evil.example.net", readFile(t, c.CAFile()))
			refused(t, "custodian federates a network", err, http.StatusForbidden, "forbidden")
			_, err = cl.DeleteAnchor(ctx, c.Network)
			refused(t, "custodian removes the own anchor", err, http.StatusForbidden, "forbidden")
			_, err = cl.AuthorizeRoute(ctx, api.RouteAuthRequest{Prefix: "10.0.0.0/8", Origins: []string{cust.id}})
			refused(t, "custodian authorizes itself a prefix", err, http.StatusForbidden, "forbidden")
			// Policies: not written by a custodian.
			p, err := admin.Policy(ctx)
			if err != nil {
				t.Fatal(err)
			}
			_, err = cl.SetPolicy(ctx, "permit (principal, action, resource);", p.Version)
			refused(t, "custodian writes policies", err, http.StatusForbidden, "forbidden")
		})
	}
	if _, err := ways[0].cl.Revoke(ctx, api.RevokeRequest{Kind: "node", ID: plain.id}); err != nil {
		t.Fatalf("custodian revokes a NODE node: %v", err)
	}

	// A policy that lets custodians create any token still hands out no
	// root server: the floor below the policies refuses it.
	p, err := admin.Policy(ctx)
	if err != nil {
		t.Fatal(err)
	}
	loose := p.Text + "\n@id(\"custodian-any-token\")\npermit (principal == Role::\"NODE_CUSTODIAN\", action == Action::\"token.create\", resource);\n"
	if _, err := admin.SetPolicy(ctx, loose, p.Version); err != nil {
		t.Fatal(err)
	}
	for _, req := range []api.CreateJoinTokenRequest{{Kind: "root"}, {Kind: "node", Principal: "ADMIN"}, {Kind: "node", Principal: "DATA_CUSTODIAN"}} {
		_, err := ways[0].cl.CreateJoinToken(ctx, req)
		refused(t, "under a loose policy, custodian makes a "+req.Kind+" token for "+req.Principal, err, http.StatusForbidden, "escalation_refused")
	}
	if _, err := ways[0].cl.CreateJoinToken(ctx, api.CreateJoinTokenRequest{Kind: "node", Principal: "NODE_CUSTODIAN"}); err != nil {
		t.Fatalf("under the loose policy a custodian may make a token for its own principal: %v", err)
	}

	// A DATA_CUSTODIAN that may write policies may not grant itself (or
	// anyone) what it does not hold.
	p, _ = admin.Policy(ctx)
	writer := p.Text + "\n@id(\"data-custodian-writes\")\npermit (principal == Role::\"DATA_CUSTODIAN\", action == Action::\"policy.write\", resource);\n"
	if _, err := admin.SetPolicy(ctx, writer, p.Version); err != nil {
		t.Fatal(err)
	}
	dcl := data.client(t, c, r, data.bearer(t, c.Network, identity.PrincipalDataCustodian))
	p, _ = admin.Policy(ctx)
	grab := p.Text + "\n@id(\"grab\")\npermit (principal == Role::\"DATA_CUSTODIAN\", action == Action::\"token.create\", resource);\n"
	_, err = dcl.SetPolicy(ctx, grab, p.Version)
	refused(t, "a policy writer grants itself token.create", err, http.StatusForbidden, "escalation_refused")
	_, err = dcl.SetPolicyRequest(ctx, api.SetPolicyRequest{Text: "forbid (principal, action, resource);", ExpectVersion: p.Version, Force: true})
	refused(t, "a policy writer forces a policy", err, http.StatusForbidden, "forbidden")
	if after, _ := admin.Policy(ctx); after.Version != p.Version {
		t.Fatalf("a refused policy write changed the policy: version %d, was %d", after.Version, p.Version)
	}

	// Nothing the custodian tried left a root token or a token beyond
	// NODE, USER and (under the loose policy) its own principal.
	toks, err = admin.JoinTokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range toks {
		if before[tok.ID] {
			continue
		}
		if tok.Kind != "node" || (tok.Principal != "NODE" && tok.Principal != "USER" && tok.Principal != "NODE_CUSTODIAN") {
			t.Errorf("the attacks left a token behind: %+v", tok)
		}
	}
	converged(t, c)
}

// csrFor is a CSR of a new key for node id.
func csrFor(t *testing.T, network, id string) []byte {
	t.Helper()
	k, err := ca.GenerateKey(ca.KeyP256, nil)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := ca.NewCSR(k, ca.Identity{Network: network, Kind: ca.KindNode, Name: id}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return csr
}

// adminKeyID is the kid of r1's admin credential.
func adminKeyID(t *testing.T, c *harness.Cluster) string {
	t.Helper()
	cert, err := ca.LoadCredential(c.Credential())
	if err != nil {
		t.Fatal(err)
	}
	kid, err := identity.Thumbprint(cert.Leaf.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return kid
}
