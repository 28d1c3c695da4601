package policy

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keymesh/keymesh/identity"
)

func TestDefaultPolicies(t *testing.T) {
	a := NewAuthorizer(nil)
	want := map[identity.Principal][]Action{
		identity.PrincipalAdmin: Actions(),
		identity.PrincipalNode:  {CertRenew, TrustRead, RouteAuthRead, PeerConnect, RouteAnnounce, AuthorizeQuery, GossipKeys},
		identity.PrincipalNodeCustodian: {ClusterRead, NodeList, TokenCreate, TokenList, TokenRevoke,
			RegistrationList, RegistrationApprove, RegistrationDeny, RevocationCreate, RevocationList, TrustRead, RouteAuthRead, AuthorizeQuery},
		identity.PrincipalDataCustodian: {ClusterRead, RevocationList, PolicyRead, TrustRead, RouteAuthRead, RouteAuthWrite, AuthorizeQuery},
		identity.PrincipalUser:          {TrustRead, AuthorizeQuery},
	}
	// The actions whose decision depends on what they hand out or take away.
	conditional := []Action{TokenCreate, RegistrationApprove, RevocationCreate, TrustWrite}
	for p, acts := range want {
		got := a.Allowed(p, Context{Network: "mainnet.example.net"})
		sorted := func(s []Action) []Action { s = slices.Clone(s); slices.Sort(s); return s }
		if !slices.Equal(sorted(got), sorted(acts)) {
			t.Errorf("%s may %v, want %v", p, got, acts)
		}
		for _, act := range Actions() {
			if slices.Contains(conditional, act) && p != identity.PrincipalAdmin {
				continue
			}
			d, err := a.Decide(p, act, Context{})
			if err != nil {
				t.Fatal(err)
			}
			if d.Allow != slices.Contains(acts, act) {
				t.Errorf("%s %s: allow = %v", p, act, d.Allow)
			}
			if d.Allow && len(d.Reasons) == 0 || len(d.Errors) > 0 {
				t.Errorf("%s %s: decision %+v", p, act, d)
			}
		}
	}
	d, _ := a.Decide(identity.PrincipalAdmin, PolicyWrite, Context{})
	if !slices.Equal(d.Reasons, []string{"admin-all"}) {
		t.Fatalf("reasons = %v", d.Reasons)
	}
	// Only ADMIN may write policies.
	for _, p := range identity.Principals() {
		d, _ := a.Decide(p, PolicyWrite, Context{})
		if d.Allow != (p == identity.PrincipalAdmin) {
			t.Errorf("%s policy.write = %v", p, d.Allow)
		}
	}
	if got := len(Default().IDs()); got != 8 {
		t.Fatalf("default ids = %v", Default().IDs())
	}
}

// TestDefaultGrants is the table of what the default policies let each
// principal hand out or take away: root-join tokens and ADMIN are for
// ADMIN alone; a node custodian admits and revokes nodes and users.
func TestDefaultGrants(t *testing.T) {
	a := NewAuthorizer(nil)
	admin, nodeP, cust, data, user := identity.PrincipalAdmin, identity.PrincipalNode, identity.PrincipalNodeCustodian,
		identity.PrincipalDataCustodian, identity.PrincipalUser
	tok := func(kind string, p identity.Principal) Context {
		return Context{Network: "mainnet.example.net", Grant: &Grant{Kind: kind, Principal: p, Uses: 5, TTL: time.Hour}}
	}
	approve := func(p identity.Principal) Context { return Context{Grant: &Grant{Principal: p}} }
	revoke := func(kind, owner string, p identity.Principal) Context {
		return Context{Revocation: &RevocationTarget{Kind: kind, Owner: owner, Principal: p}}
	}
	tests := []struct {
		p     identity.Principal
		act   Action
		ctx   Context
		allow bool
	}{
		{admin, TokenCreate, tok(TokenKindRoot, admin), true},
		{admin, TokenCreate, tok(TokenKindNode, admin), true},
		{cust, TokenCreate, tok(TokenKindRoot, admin), false},
		{cust, TokenCreate, tok(TokenKindNode, admin), false},
		{cust, TokenCreate, tok(TokenKindNode, data), false},
		{cust, TokenCreate, tok(TokenKindNode, cust), false},
		{cust, TokenCreate, tok(TokenKindNode, nodeP), true},
		{cust, TokenCreate, tok(TokenKindNode, user), true},
		{cust, TokenCreate, Context{}, false},
		{data, TokenCreate, tok(TokenKindNode, nodeP), false},
		{nodeP, TokenCreate, tok(TokenKindNode, nodeP), false},
		{cust, RegistrationApprove, approve(nodeP), true},
		{cust, RegistrationApprove, approve(user), true},
		{cust, RegistrationApprove, approve(admin), false},
		{cust, RegistrationApprove, approve(data), false},
		{admin, RegistrationApprove, approve(admin), true},
		{cust, RevocationCreate, revoke("node", OwnerNode, nodeP), true},
		{cust, RevocationCreate, revoke("cert", OwnerNode, user), true},
		{cust, RevocationCreate, revoke("key", OwnerNode, cust), false},
		{cust, RevocationCreate, revoke("cert", OwnerRoot, admin), false},
		{cust, RevocationCreate, revoke("key", OwnerAdmin, admin), false},
		{cust, RevocationCreate, revoke("cert", OwnerUnknown, ""), false},
		{cust, RevocationCreate, revoke("token", OwnerUnknown, ""), true},
		{admin, RevocationCreate, revoke("cert", OwnerRoot, admin), true},
		{data, RevocationCreate, revoke("node", OwnerNode, nodeP), false},
		{cust, TrustWrite, Context{Anchor: &AnchorTarget{Network: "other.example.net"}}, false},
		{admin, TrustWrite, Context{Anchor: &AnchorTarget{Network: "other.example.net"}}, true},
	}
	for _, tc := range tests {
		d, err := a.Decide(tc.p, tc.act, tc.ctx)
		if err != nil {
			t.Fatal(err)
		}
		if d.Allow != tc.allow || len(d.Errors) > 0 {
			t.Errorf("%s %s grant=%+v revocation=%+v: %+v, want allow=%v", tc.p, tc.act, tc.ctx.Grant, tc.ctx.Revocation, d, tc.allow)
		}
	}
}

// TestMayActAs is the floor below the policies: nobody hands out a
// principal that holds an administrative action it does not hold, even
// where a policy permits the token.
func TestMayActAs(t *testing.T) {
	a := NewAuthorizer(nil)
	admin, nodeP, cust, data, user := identity.PrincipalAdmin, identity.PrincipalNode, identity.PrincipalNodeCustodian,
		identity.PrincipalDataCustodian, identity.PrincipalUser
	tests := []struct {
		p, q identity.Principal
		ok   bool
	}{
		{admin, admin, true}, {admin, nodeP, true}, {admin, cust, true}, {admin, data, true}, {admin, user, true},
		{cust, nodeP, true}, {cust, user, true}, {cust, cust, true},
		{cust, admin, false}, {cust, data, false},
		{data, user, true}, {data, nodeP, true}, {data, cust, false}, {data, admin, false},
		{nodeP, user, true}, {nodeP, cust, false}, {nodeP, admin, false},
		{user, nodeP, false}, {user, admin, false},
		{"ROOT", user, false}, {admin, "ROOT", false},
	}
	for _, tc := range tests {
		ok, missing := a.MayActAs(tc.p, tc.q, "mainnet.example.net")
		if ok != tc.ok {
			t.Errorf("%s may act as %s: %v (missing %v), want %v", tc.p, tc.q, ok, missing, tc.ok)
		}
		err := a.CheckGrant(tc.p, tc.q, "mainnet.example.net")
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrEscalation)) {
			t.Errorf("CheckGrant(%s, %s) = %v", tc.p, tc.q, err)
		}
	}
	// A policy that lets custodians make ADMIN tokens still hands out no
	// ADMIN: the floor holds whatever the policies say.
	ps, err := ParsePolicies(DefaultText() + `
@id("custodian-anything")
permit (principal == Role::"NODE_CUSTODIAN", action == Action::"token.create", resource);
`)
	if err != nil {
		t.Fatal(err)
	}
	loose := NewAuthorizer(ps)
	if d, _ := loose.Decide(cust, TokenCreate, Context{Grant: &Grant{Kind: TokenKindRoot, Principal: admin}}); !d.Allow {
		t.Fatal("the loose policy does not permit the root token")
	}
	var ge *GrantError
	if err := loose.CheckGrant(cust, admin, "mainnet.example.net"); !errors.As(err, &ge) || !slices.Contains(ge.Missing, PolicyWrite) {
		t.Fatalf("custodian acting as ADMIN under the loose policy: %v", err)
	}
	// A grant to NODE that gives nodes an administrative action makes NODE
	// more than a custodian: custodians may then no longer admit nodes.
	ps, err = ParsePolicies(DefaultText() + `
@id("nodes-write-routes")
permit (principal == Role::"NODE", action == Action::"routeauth.write", resource);
`)
	if err != nil {
		t.Fatal(err)
	}
	if ok, missing := NewAuthorizer(ps).MayActAs(cust, nodeP, "mainnet.example.net"); ok || !slices.Equal(missing, []Action{RouteAuthWrite}) {
		t.Fatalf("custodian acting as a route-writing NODE: ok=%v missing=%v", ok, missing)
	}
}

// TestGrantsBeyond: a principal allowed to write policies may not give
// anyone what it does not hold; ADMIN may.
func TestGrantsBeyond(t *testing.T) {
	cur, err := ParsePolicies(DefaultText() + `
@id("data-custodian-writes-policies")
permit (principal == Role::"DATA_CUSTODIAN", action == Action::"policy.write", resource);
`)
	if err != nil {
		t.Fatal(err)
	}
	grabs, err := ParsePolicies(cur.Text() + `
@id("grab")
permit (principal == Role::"DATA_CUSTODIAN", action == Action::"revocation.create", resource);
`)
	if err != nil {
		t.Fatal(err)
	}
	got := GrantsBeyond(cur, grabs, identity.PrincipalDataCustodian, "mainnet.example.net")
	if !slices.Equal(got, []NewGrant{{identity.PrincipalDataCustodian, RevocationCreate}}) {
		t.Fatalf("grants beyond the writer: %v", got)
	}
	// Giving USER something the writer holds is fine; so is taking away.
	shares, err := ParsePolicies(cur.Text() + `
@id("users-read-routes")
permit (principal == Role::"USER", action == Action::"routeauth.read", resource);
`)
	if err != nil {
		t.Fatal(err)
	}
	if got := GrantsBeyond(cur, shares, identity.PrincipalDataCustodian, "mainnet.example.net"); got != nil {
		t.Fatalf("sharing what the writer holds: %v", got)
	}
	if got := GrantsBeyond(cur, Default(), identity.PrincipalDataCustodian, "mainnet.example.net"); got != nil {
		t.Fatalf("taking away: %v", got)
	}
	if got := GrantsBeyond(cur, grabs, identity.PrincipalAdmin, "mainnet.example.net"); got != nil {
		t.Fatalf("ADMIN: %v", got)
	}
}

func TestDecideBadInput(t *testing.T) {
	a := NewAuthorizer(nil)
	if _, err := a.Decide("ROOT", TrustRead, Context{}); !errors.Is(err, ErrUnknownPrincipal) {
		t.Fatalf("err = %v", err)
	}
	if _, err := a.Decide(identity.PrincipalAdmin, "cluster.nuke", Context{}); !errors.Is(err, ErrUnknownAction) {
		t.Fatalf("err = %v", err)
	}
	if got := a.Allowed("ROOT", Context{}); got != nil {
		t.Fatalf("unknown principal allowed %v", got)
	}
}

func TestContextPolicies(t *testing.T) {
	ps, err := ParsePolicies(DefaultText() + `
@id("peering-needs-binding")
forbid (principal, action == Action::"peer.connect", resource) unless { context.bound };

@id("no-r9")
forbid (principal, action, resource) when { context.node == "r9" };

@id("custodian-own-network")
forbid (principal == Role::"NODE_CUSTODIAN", action, resource) unless { resource == Network::"mainnet.example.net" };
`)
	if err != nil {
		t.Fatal(err)
	}
	a := NewAuthorizer(ps)
	tests := []struct {
		p     identity.Principal
		act   Action
		ctx   Context
		allow bool
		why   string
	}{
		{identity.PrincipalNode, PeerConnect, Context{Node: "r1", Bound: true}, true, "node-mesh"},
		{identity.PrincipalNode, PeerConnect, Context{Node: "r1"}, false, "peering-needs-binding"},
		{identity.PrincipalNode, TrustRead, Context{Node: "r9"}, false, "no-r9"},
		{identity.PrincipalNodeCustodian, TokenList, Context{Network: "mainnet.example.net"}, true, "node-custodian-lifecycle"},
		{identity.PrincipalNodeCustodian, TokenList, Context{Network: "othernet.example.net"}, false, "custodian-own-network"},
	}
	for _, tc := range tests {
		d, err := a.Decide(tc.p, tc.act, tc.ctx)
		if err != nil {
			t.Fatal(err)
		}
		if d.Allow != tc.allow || !slices.Contains(d.Reasons, tc.why) {
			t.Errorf("%s %s %+v: %+v, want allow=%v because %s", tc.p, tc.act, tc.ctx, d, tc.allow, tc.why)
		}
	}
	// DecideVerified reads the context from a verified token.
	v := identity.Verified{Claims: identity.Claims{Subject: "spiffe://mainnet.example.net/node/r1", Principal: identity.PrincipalNode, CertThumbprint: "x"},
		Node: "r1", Network: "mainnet.example.net"}
	if d, _ := a.DecideVerified(v, PeerConnect, ""); !d.Allow {
		t.Fatalf("bound NODE token refused peer.connect: %+v", d)
	}
	v.Claims.CertThumbprint = ""
	if d, _ := a.DecideVerified(v, PeerConnect, ""); d.Allow {
		t.Fatal("unbound NODE token allowed peer.connect")
	}
	// Swapping the policy set takes effect at once.
	a.SetPolicies(Default())
	if d, _ := a.DecideVerified(v, PeerConnect, ""); !d.Allow {
		t.Fatal("default set not in force after SetPolicies")
	}
}

// TestParsePoliciesBad is the table of policy texts that must be refused.
func TestParsePoliciesBad(t *testing.T) {
	tests := []struct {
		name, text, want string
		line             int
	}{
		{"syntax", `permit (principal, action, resource)`, "parse error", 0},
		{"garbage", `allow everything;`, "parse error", 0},
		{"unknown action", "permit (principal, action == Action::\"cluster.raed\", resource);", "", 1},
		{"unknown role", "\n\npermit (principal == Role::\"ROOT\", action, resource);", "ROOT", 3},
		{"unknown role in a condition", `permit (principal, action, resource) when { principal == Role::"admin" };`, "admin", 1},
		{"unknown role in a set", `permit (principal, action, resource) when { [Role::"ADMIN", Role::"ROOT"].contains(principal) };`, "ROOT", 1},
		{"unknown entity type", `permit (principal == User::"alice", action, resource);`, "", 1},
		{"unknown context attribute", `permit (principal, action, resource) when { context.admin };`, "", 1},
		{"type error", `permit (principal, action, resource) when { context.bound == "yes" };`, "", 1},
		{"attribute of another action", `permit (principal, action == Action::"cluster.read", resource) when { context.grant_principal == "NODE" };`, "", 1},
		{"grant attribute on every action", `permit (principal, action, resource) when { context.token_kind == "node" };`, "", 1},
		{"duplicate id", "@id(\"a\")\npermit (principal, action, resource);\n@id(\"a\")\nforbid (principal, action, resource);", "duplicate", 3},
		{"empty id", `@id("") permit (principal, action, resource);`, "empty", 1},
		{"too large", strings.Repeat(" ", MaxPolicyBytes+1), "limit", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParsePolicies(tc.text)
			if !errors.Is(err, ErrInvalidPolicy) {
				t.Fatalf("err = %v", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
			var pe *PolicyError
			if tc.line > 0 && (!errors.As(err, &pe) || pe.Line != tc.line) {
				t.Fatalf("err = %#v, want line %d", err, tc.line)
			}
		})
	}
	// A syntax error names its position in the message.
	_, err := ParsePolicies("permit (principal, action, resource);\npermit (principal, action resource);")
	if err == nil || !strings.Contains(err.Error(), ":2:") && !strings.Contains(err.Error(), "2:") {
		t.Fatalf("syntax error without a position: %v", err)
	}
}

func TestParsePoliciesKeepsText(t *testing.T) {
	ps, err := ParsePolicies(DefaultText())
	if err != nil {
		t.Fatal(err)
	}
	if ps.Text() != DefaultText() || !slices.Equal(ps.IDs(), []string{"admin-all", "node-mesh", "node-custodian-lifecycle",
		"node-custodian-node-tokens", "node-custodian-approve-nodes", "node-custodian-revoke-nodes", "data-custodian-routing", "user-read-trust"}) {
		t.Fatalf("ids = %v", ps.IDs())
	}
	empty, err := ParsePolicies("")
	if err != nil || len(empty.IDs()) != 0 {
		t.Fatalf("empty set: %v", err)
	}
	if NewAuthorizer(empty).Allowed(identity.PrincipalAdmin, Context{}) != nil {
		t.Fatal("an empty set allowed something")
	}
}

func FuzzParsePolicies(f *testing.F) {
	f.Add(DefaultText())
	f.Add(`permit (principal, action, resource) when { context.bound };`)
	f.Add(`forbid (principal == Role::"USER", action in [Action::"trust.read"], resource) unless { context.node like "r*" };`)
	f.Fuzz(func(t *testing.T, text string) {
		ps, err := ParsePolicies(text)
		if err != nil {
			if !errors.Is(err, ErrInvalidPolicy) {
				t.Fatalf("error does not wrap ErrInvalidPolicy: %v", err)
			}
			return
		}
		a := NewAuthorizer(ps)
		for _, p := range identity.Principals() {
			a.Allowed(p, Context{Node: "r1", Bound: true})
		}
	})
}

// TestPeerContext: peer.connect is decided on the session's relationship
// and the deciding node, so a policy can keep customers from peering
// with a node, or a node to its internal peers.
func TestPeerContext(t *testing.T) {
	ps, err := ParsePolicies(DefaultText() + `
@id("no-customers-at-core")
forbid (principal, action == Action::"peer.connect", resource)
when { context.relationship == "customer" && context.local_node like "core-*" };`)
	if err != nil {
		t.Fatal(err)
	}
	a := NewAuthorizer(ps)
	for _, c := range []struct {
		rel, local string
		allow      bool
		reason     string
	}{
		{"customer", "core-1", false, "no-customers-at-core"},
		{"customer", "edge-1", true, ""},
		{"internal", "core-1", true, ""},
	} {
		d, err := a.Decide(identity.PrincipalNode, PeerConnect, Context{Node: "n1", Network: "mainnet.example.net", Bound: true,
			Peer: &PeerTarget{Relationship: c.rel, LocalNode: c.local, LocalNetwork: "mainnet.example.net"}})
		if err != nil || d.Allow != c.allow || (!c.allow && (len(d.Reasons) != 1 || d.Reasons[0] != c.reason)) {
			t.Errorf("%s at %s: %+v %v, want allow %v by %q", c.rel, c.local, d, err, c.allow, c.reason)
		}
	}
	if _, err := ParsePolicies(`permit (principal, action == Action::"peer.connect", resource) when { context.relation == "x" };`); err == nil {
		t.Error("a policy on an attribute peer.connect has not was accepted")
	}
}
