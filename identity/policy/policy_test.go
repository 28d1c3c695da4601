package policy

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/keymesh/keymesh/identity"
)

func TestDefaultPolicies(t *testing.T) {
	a := NewAuthorizer(nil)
	want := map[identity.Principal][]Action{
		identity.PrincipalAdmin: Actions(),
		identity.PrincipalNode:  {CertRenew, TrustRead, RouteAuthRead, PeerConnect, RouteAnnounce, AuthorizeQuery},
		identity.PrincipalNodeCustodian: {ClusterRead, NodeList, TokenCreate, TokenList, TokenRevoke,
			RegistrationList, RegistrationApprove, RegistrationDeny, RevocationCreate, RevocationList, TrustRead, AuthorizeQuery},
		identity.PrincipalDataCustodian: {ClusterRead, RevocationList, PolicyRead, TrustRead, RouteAuthRead, RouteAuthWrite, AuthorizeQuery},
		identity.PrincipalUser:          {TrustRead, AuthorizeQuery},
	}
	for p, acts := range want {
		got := a.Allowed(p, Context{Network: "mainnet.example.net"})
		sorted := func(s []Action) []Action { s = slices.Clone(s); slices.Sort(s); return s }
		if !slices.Equal(sorted(got), sorted(acts)) {
			t.Errorf("%s may %v, want %v", p, got, acts)
		}
		for _, act := range Actions() {
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
	if got := len(Default().IDs()); got != 5 {
		t.Fatalf("default ids = %v", Default().IDs())
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
		{identity.PrincipalNodeCustodian, TokenCreate, Context{Network: "mainnet.example.net"}, true, "node-custodian-lifecycle"},
		{identity.PrincipalNodeCustodian, TokenCreate, Context{Network: "othernet.example.net"}, false, "custodian-own-network"},
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
	if ps.Text() != DefaultText() || !slices.Equal(ps.IDs(), []string{"admin-all", "node-mesh", "node-custodian-lifecycle", "data-custodian-routing", "user-read-trust"}) {
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
