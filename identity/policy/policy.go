package policy

import (
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	cedar "github.com/cedar-policy/cedar-go"
	xast "github.com/cedar-policy/cedar-go/x/exp/ast"
	"github.com/cedar-policy/cedar-go/x/exp/schema"
	"github.com/cedar-policy/cedar-go/x/exp/schema/validate"

	"github.com/keymesh/keymesh/identity"
)

//go:embed schema.cedar
var schemaText []byte

//go:embed default.cedar
var defaultText string

// Sentinel errors.
var (
	// ErrInvalidPolicy: a policy set is refused (syntax, schema, limits, duplicate ids).
	ErrInvalidPolicy = errors.New("policy: invalid policy set")
	// ErrUnknownAction: Decide was asked about an action that is not one of Actions.
	ErrUnknownAction = errors.New("policy: unknown action")
	// ErrUnknownPrincipal: Decide was asked about a principal that is not known.
	ErrUnknownPrincipal = errors.New("policy: unknown principal")
	// ErrEscalation: a principal asked to hand out a principal that may do
	// more than it may (see Authorizer.MayActAs).
	ErrEscalation = errors.New("policy: escalation refused")
)

// PolicyError locates a refused policy: the policy's id and its position in
// the text. For a syntax error Policy is "" and the position is in Err's
// message (the parser's "<input>:line:column").
type PolicyError struct {
	Policy       string // @id or "policy<N>"; "" for a syntax error
	Line, Column int
	Err          error
}

func (e *PolicyError) Error() string {
	if e.Policy == "" {
		return ErrInvalidPolicy.Error() + ": " + e.Err.Error()
	}
	return fmt.Sprintf("%v: %s at line %d, column %d: %v", ErrInvalidPolicy, e.Policy, e.Line, e.Column, e.Err)
}

// Unwrap returns ErrInvalidPolicy and the cause.
func (e *PolicyError) Unwrap() []error { return []error{ErrInvalidPolicy, e.Err} }

// Limits of a policy set.
const (
	MaxPolicyBytes = 1 << 20
	MaxPolicies    = 10000
)

// PolicySet is a parsed and validated Cedar policy set with its source text.
// It is immutable.
type PolicySet struct {
	text string
	set  *cedar.PolicySet
	ids  []string
}

// Text returns the source text (what the replicated state stores).
func (p *PolicySet) Text() string { return p.text }

// IDs returns the policy ids in source order.
func (p *PolicySet) IDs() []string { return slices.Clone(p.ids) }

// DefaultText returns the built-in default policies.
func DefaultText() string { return defaultText }

// Default returns the built-in default policies: ADMIN may do everything;
// NODE may renew its certificate, read the trust state and route
// authorizations, connect to peers and announce routes; NODE_CUSTODIAN
// manages registrations, join tokens and revocations; DATA_CUSTODIAN manages
// route authorizations and reads policies; USER reads the trust state. Every
// principal may ask what it is allowed (authorize.query).
func Default() *PolicySet {
	p, err := ParsePolicies(defaultText)
	if err != nil {
		panic("policy: the built-in default policies are invalid: " + err.Error()) // a build defect, caught by the tests
	}
	return p
}

// ParsePolicies parses Cedar policy text and validates every policy against
// the keymesh schema (principal Role, resource Network, the known actions and
// the request context), so that a typo in an action or role name is refused
// rather than silently never matching. A policy's id is its @id annotation
// or, failing that, "policy<N>" (N counting from 0); ids must be unique.
// Errors wrap ErrInvalidPolicy; a refused policy is reported as a
// *PolicyError with its position.
func ParsePolicies(text string) (*PolicySet, error) {
	if len(text) > MaxPolicyBytes {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrInvalidPolicy, len(text), MaxPolicyBytes)
	}
	list, err := cedar.NewPolicyListFromBytes("", []byte(text))
	if err != nil {
		return nil, &PolicyError{Err: err}
	}
	if len(list) > MaxPolicies {
		return nil, fmt.Errorf("%w: %d policies, limit %d", ErrInvalidPolicy, len(list), MaxPolicies)
	}
	v, err := newValidator()
	if err != nil {
		return nil, err
	}
	ps := &PolicySet{text: text, set: cedar.NewPolicySet()}
	for i, pol := range list {
		id := "policy" + strconv.Itoa(i)
		if a, ok := pol.Annotations()["id"]; ok {
			id = string(a)
		}
		pos := pol.Position()
		bad := func(err error) error {
			return &PolicyError{Policy: id, Line: pos.Line, Column: pos.Column, Err: err}
		}
		if id == "" || strings.ContainsAny(id, "\x00\n") {
			return nil, bad(errors.New("empty or multi-line @id"))
		}
		if slices.Contains(ps.ids, id) {
			return nil, bad(fmt.Errorf("duplicate policy id %q", id))
		}
		if err := v.Policy(id, (*xast.Policy)(pol.AST())); err != nil {
			return nil, bad(err)
		}
		if err := checkRoles(pol); err != nil {
			return nil, bad(err)
		}
		ps.set.Add(cedar.PolicyID(id), pol)
		ps.ids = append(ps.ids, id)
	}
	return ps, nil
}

// checkRoles refuses references to Role entities that are not known
// principals (the schema validator lets unknown enum values through).
func checkRoles(pol *cedar.Policy) error {
	b, err := pol.MarshalJSON()
	if err != nil {
		return err
	}
	var tree any
	if err := json.Unmarshal(b, &tree); err != nil {
		return err
	}
	var walk func(any) error
	walk = func(n any) error {
		switch n := n.(type) {
		case map[string]any:
			if n["type"] == "Role" {
				if id, ok := n["id"].(string); ok && !identity.Principal(id).Known() {
					return fmt.Errorf("unknown role Role::%q; the roles are %v", id, identity.Principals())
				}
			}
			for _, c := range n {
				if err := walk(c); err != nil {
					return err
				}
			}
		case []any:
			for _, c := range n {
				if err := walk(c); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return walk(tree)
}

func newValidator() (*validate.Validator, error) {
	var s schema.Schema
	if err := s.UnmarshalCedar(schemaText); err != nil {
		return nil, fmt.Errorf("policy: built-in schema: %w", err)
	}
	r, err := s.Resolve()
	if err != nil {
		return nil, fmt.Errorf("policy: built-in schema: %w", err)
	}
	return validate.New(r), nil
}

// Context describes the request beyond principal and action. The zero
// Context is valid; the action-specific parts (Grant, Revocation, Anchor)
// are read only for their actions, and zero when nil.
type Context struct {
	// Subject is the caller's SPIFFE ID (a token's sub).
	Subject string
	// Node is the caller's node id.
	Node string
	// Network is the caller's network; it is also the request's resource
	// (Network::"<network>").
	Network string
	// Target is the id the operation acts on (a node id, registration id,
	// kid, ...), "" if none.
	Target string
	// Bound: the token was bound to the certificate it was presented with.
	Bound bool

	// Grant is what token.create makes or registration.approve approves.
	Grant *Grant
	// Revocation is what revocation.create revokes.
	Revocation *RevocationTarget
	// Anchor is what trust.write changes.
	Anchor *AnchorTarget
	// Peer is the session peer.connect opens.
	Peer *PeerTarget
}

// Token kinds of a Grant, as in the join token records.
const (
	TokenKindRoot = "root"
	TokenKindNode = "node"
)

// Grant is a principal being handed out: the join token token.create
// makes (Kind, Uses, TTL) or the registration registration.approve
// approves (Principal alone). A root-join token hands out ADMIN: the root
// server that joins with it receives the AS root.
type Grant struct {
	Kind      string // TokenKindRoot or TokenKindNode; "" for an approval
	Principal identity.Principal
	Uses      int
	TTL       time.Duration
}

// Owners of a revoked thing (RevocationTarget.Owner).
const (
	OwnerNode    = "node"
	OwnerRoot    = "root"
	OwnerAdmin   = "admin"
	OwnerUnknown = "unknown"
)

// RevocationTarget is what revocation.create revokes: its kind (cert,
// token, key, node), whose it is and that owner's principal.
type RevocationTarget struct {
	Kind      string
	Owner     string // OwnerNode, OwnerRoot, OwnerAdmin or OwnerUnknown
	Principal identity.Principal
}

// AnchorTarget is the trust anchor trust.write adds, changes or removes.
type AnchorTarget struct {
	Network string
	Own     bool // the cluster's own network (its access list)
}

// PeerTarget is the session peer.connect opens: what the peer is to the
// deciding node (its configured relationship: customer, provider, peer or
// internal) and the deciding node itself.
type PeerTarget struct {
	Relationship string
	LocalNode    string
	LocalNetwork string
}

// ContextOf builds the Context of a verified token.
func ContextOf(v identity.Verified, target string) Context {
	return Context{
		Subject: v.Claims.Subject, Node: v.Node, Network: v.Network, Target: target,
		Bound: v.Claims.CertThumbprint != "",
	}
}

// Decision is the outcome of one authorization.
type Decision struct {
	Allow bool
	// Reasons are the ids of the policies that decided: the permits that
	// allowed, or the forbids that denied. Empty when nothing matched
	// (denied by default).
	Reasons []string
	// Errors are policies that failed to evaluate (they are skipped, as
	// Cedar specifies).
	Errors []string
}

// Authorizer decides requests against a policy set that can be swapped
// atomically when the replicated policies change. Safe for concurrent use.
type Authorizer struct {
	ps atomic.Pointer[PolicySet]
}

// NewAuthorizer returns an Authorizer over ps (nil means Default()).
func NewAuthorizer(ps *PolicySet) *Authorizer {
	if ps == nil {
		ps = Default()
	}
	a := &Authorizer{}
	a.ps.Store(ps)
	return a
}

// SetPolicies swaps in a new policy set (from ParsePolicies).
func (a *Authorizer) SetPolicies(ps *PolicySet) {
	if ps != nil {
		a.ps.Store(ps)
	}
}

// Policies returns the policy set in use.
func (a *Authorizer) Policies() *PolicySet { return a.ps.Load() }

// Decide answers whether principal may take action in ctx.
func (a *Authorizer) Decide(principal identity.Principal, action Action, ctx Context) (Decision, error) {
	if !principal.Known() {
		return Decision{}, fmt.Errorf("%w: %q", ErrUnknownPrincipal, principal)
	}
	if !action.Known() {
		return Decision{}, fmt.Errorf("%w: %q", ErrUnknownAction, action)
	}
	return decide(a.ps.Load(), principal, action, ctx), nil
}

// DecideVerified is Decide for a verified token.
func (a *Authorizer) DecideVerified(v identity.Verified, action Action, target string) (Decision, error) {
	return a.Decide(v.Claims.Principal, action, ContextOf(v, target))
}

// Allowed lists the actions principal may take in ctx (for POST
// /v1/authorize). Policies that depend on ctx.Target are evaluated with the
// Target given (usually ""). An action whose own context part ctx lacks
// (what token.create makes, what revocation.create revokes, ...) is listed
// when the principal may take it for at least one of its kinds (see
// variants). An unknown principal may take none.
func (a *Authorizer) Allowed(principal identity.Principal, ctx Context) []Action {
	if !principal.Known() {
		return nil
	}
	ps := a.ps.Load()
	var out []Action
	for _, act := range Actions() {
		if allowedSome(ps, principal, act, ctx) {
			out = append(out, act)
		}
	}
	return out
}

func decide(ps *PolicySet, principal identity.Principal, action Action, ctx Context) Decision {
	req := cedar.Request{
		Principal: cedar.NewEntityUID("Role", cedar.String(principal)),
		Action:    cedar.NewEntityUID("Action", cedar.String(action)),
		Resource:  cedar.NewEntityUID("Network", cedar.String(ctx.Network)),
		Context:   cedar.NewRecord(contextRecord(action, ctx)),
	}
	ok, diag := cedar.Authorize(ps.set, nil, req)
	d := Decision{Allow: ok == cedar.Allow}
	for _, r := range diag.Reasons {
		d.Reasons = append(d.Reasons, string(r.PolicyID))
	}
	for _, e := range diag.Errors {
		d.Errors = append(d.Errors, e.String())
	}
	return d
}

// contextRecord is the Cedar context of action: the base attributes of
// every action and those of the action's own context type (schema.cedar).
func contextRecord(action Action, ctx Context) cedar.RecordMap {
	m := cedar.RecordMap{
		"subject": cedar.String(ctx.Subject),
		"node":    cedar.String(ctx.Node),
		"network": cedar.String(ctx.Network),
		"target":  cedar.String(ctx.Target),
		"bound":   cedar.Boolean(ctx.Bound),
	}
	switch action {
	case TokenCreate:
		g := zeroIfNil(ctx.Grant)
		m["token_kind"] = cedar.String(g.Kind)
		m["grant_principal"] = cedar.String(g.Principal)
		m["uses"] = cedar.Long(g.Uses)
		m["ttl_seconds"] = cedar.Long(int64(g.TTL / time.Second))
	case RegistrationApprove:
		m["grant_principal"] = cedar.String(zeroIfNil(ctx.Grant).Principal)
	case RevocationCreate:
		r := zeroIfNil(ctx.Revocation)
		m["revocation_kind"] = cedar.String(r.Kind)
		m["target_owner"] = cedar.String(r.Owner)
		m["target_principal"] = cedar.String(r.Principal)
	case TrustWrite:
		an := zeroIfNil(ctx.Anchor)
		m["anchor_network"] = cedar.String(an.Network)
		m["own_network"] = cedar.Boolean(an.Own)
	case PeerConnect:
		p := zeroIfNil(ctx.Peer)
		m["relationship"] = cedar.String(p.Relationship)
		m["local_node"] = cedar.String(p.LocalNode)
		m["local_network"] = cedar.String(p.LocalNetwork)
	}
	return m
}

func zeroIfNil[T any](p *T) T {
	if p == nil {
		var zero T
		return zero
	}
	return *p
}
