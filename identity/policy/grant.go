package policy

import (
	"fmt"
	"slices"

	"github.com/keymesh/keymesh/identity"
)

// MeshActions are what a node does with its own certificate: renew it,
// peer, announce routes, take the gossip keyring. Every node of a principal that may take them
// does, whoever admitted it; they do not count when MayActAs compares what
// two principals may do.
func MeshActions() []Action { return []Action{CertRenew, PeerConnect, RouteAnnounce, GossipKeys} }

// variants are the contexts under which Allowed and MayActAs look at
// action: ctx itself, or, when ctx lacks the action's own part (a Grant,
// a RevocationTarget, an AnchorTarget), one context per kind of request
// the action can be: each token kind and principal it may grant, each
// kind of revocation and owner, an anchor of the own network and of
// another.
func variants(action Action, ctx Context) []Context {
	with := func(f func(*Context)) Context {
		c := ctx
		f(&c)
		return c
	}
	var out []Context
	switch {
	case action == TokenCreate && ctx.Grant == nil:
		out = append(out, with(func(c *Context) {
			c.Grant = &Grant{Kind: TokenKindRoot, Principal: identity.PrincipalAdmin, Uses: 1}
		}))
		for _, p := range identity.Principals() {
			out = append(out, with(func(c *Context) { c.Grant = &Grant{Kind: TokenKindNode, Principal: p, Uses: 1} }))
		}
	case action == RegistrationApprove && ctx.Grant == nil:
		for _, p := range identity.Principals() {
			out = append(out, with(func(c *Context) { c.Grant = &Grant{Principal: p} }))
		}
	case action == RevocationCreate && ctx.Revocation == nil:
		out = append(out, with(func(c *Context) { c.Revocation = &RevocationTarget{Kind: "token", Owner: OwnerUnknown} }))
		for _, kind := range []string{"cert", "key", "node"} {
			for _, p := range identity.Principals() {
				out = append(out, with(func(c *Context) { c.Revocation = &RevocationTarget{Kind: kind, Owner: OwnerNode, Principal: p} }))
			}
			for _, owner := range []string{OwnerRoot, OwnerAdmin} {
				out = append(out, with(func(c *Context) {
					c.Revocation = &RevocationTarget{Kind: kind, Owner: owner, Principal: identity.PrincipalAdmin}
				}))
			}
			out = append(out, with(func(c *Context) { c.Revocation = &RevocationTarget{Kind: kind, Owner: OwnerUnknown} }))
		}
	case action == TrustWrite && ctx.Anchor == nil:
		out = append(out,
			with(func(c *Context) { c.Anchor = &AnchorTarget{Network: ctx.Network, Own: true} }),
			with(func(c *Context) { c.Anchor = &AnchorTarget{Network: "federated.invalid"} }))
	case action == PeerConnect && ctx.Peer == nil:
		for _, r := range []string{"internal", "peer", "customer", "provider"} {
			out = append(out, with(func(c *Context) { c.Peer = &PeerTarget{Relationship: r, LocalNetwork: ctx.Network} }))
		}
	default:
		out = append(out, ctx)
	}
	return out
}

// allowedSome reports whether principal may take action in at least one
// of its variants of ctx.
func allowedSome(ps *PolicySet, principal identity.Principal, action Action, ctx Context) bool {
	for _, v := range variants(action, ctx) {
		if decide(ps, principal, action, v).Allow {
			return true
		}
	}
	return false
}

// MayActAs reports whether principal p may hand out principal q — create
// a join token for it, approve a registration for it, or revoke what
// belongs to it — under the policy set in force: q may take no
// administrative action (any but MeshActions, in any of its variants)
// that p may not take. A principal may always act as itself. missing
// lists the actions q holds and p does not.
//
// This holds whatever the policies permit: a principal that may create
// tokens cannot thereby give a node more than it holds itself.
func (a *Authorizer) MayActAs(p, q identity.Principal, network string) (ok bool, missing []Action) {
	if !p.Known() || !q.Known() {
		return false, nil
	}
	if p == q {
		return true, nil
	}
	return mayActAs(a.ps.Load(), p, q, network)
}

func mayActAs(ps *PolicySet, p, q identity.Principal, network string) (bool, []Action) {
	var missing []Action
	for _, act := range Actions() {
		if slices.Contains(MeshActions(), act) {
			continue
		}
		for _, v := range variants(act, Context{Network: network}) {
			if decide(ps, q, act, v).Allow && !decide(ps, p, act, v).Allow {
				missing = append(missing, act)
				break
			}
		}
	}
	return len(missing) == 0, missing
}

// GrantError says why a principal may not hand out another: the
// administrative actions the other holds that it does not.
type GrantError struct {
	Principal identity.Principal // who asked
	Grant     identity.Principal // what it would hand out
	Missing   []Action
}

func (e *GrantError) Error() string {
	return fmt.Sprintf("policy: principal %s may not act for %s: %s may %v, which %s may not", e.Principal, e.Grant, e.Grant, e.Missing, e.Principal)
}

// Unwrap returns ErrEscalation.
func (e *GrantError) Unwrap() error { return ErrEscalation }

// CheckGrant is MayActAs as an error: nil, or a *GrantError (ErrEscalation).
func (a *Authorizer) CheckGrant(p, q identity.Principal, network string) error {
	if ok, missing := a.MayActAs(p, q, network); !ok {
		return &GrantError{Principal: p, Grant: q, Missing: missing}
	}
	return nil
}

// NewGrant is one permission a new policy set gives that the one in force
// does not.
type NewGrant struct {
	Principal identity.Principal
	Action    Action
}

// GrantsBeyond lists what next permits that cur does not and that writer
// may not do under cur itself: a principal that may write policies must
// not give anyone, itself included, an action it does not hold. Each
// action is looked at in its variants (see Allowed). ADMIN writes without
// this check: it is the network's own authority.
func GrantsBeyond(cur, next *PolicySet, writer identity.Principal, network string) []NewGrant {
	if writer == identity.PrincipalAdmin {
		return nil
	}
	var out []NewGrant
	for _, q := range identity.Principals() {
		for _, act := range Actions() {
			for _, v := range variants(act, Context{Network: network}) {
				if decide(next, q, act, v).Allow && !decide(cur, q, act, v).Allow && !decide(cur, writer, act, v).Allow {
					out = append(out, NewGrant{Principal: q, Action: act})
					break
				}
			}
		}
	}
	return out
}
