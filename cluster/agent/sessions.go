package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"time"

	"github.com/keymesh/keymesh/identity"
	"github.com/keymesh/keymesh/identity/policy"
	"github.com/keymesh/keymesh/identity/trust"
	"github.com/keymesh/keymesh/session"
)

// The agent runs the node's peering sessions (package session) when it is
// given a listen address or peers: over the node's certificate (the
// current one, so a renewal is used by the next handshake), minting the
// OPEN's token under the node's key, verifying its peers against the
// followed trust state, deciding peer.connect with the replicated
// policies, and ending the sessions of a peer the trust state revokes as
// soon as the state arrives.

// sessionCreds are the agent's credentials for sessions.
type sessionCreds struct{ a *Agent }

// Certificate is the node's certificate for the next handshake.
func (c sessionCreds) Certificate() (*tls.Certificate, error) {
	nc, err := c.a.creds.current()
	if err != nil {
		return nil, err
	}
	cert := nc.tls
	return &cert, nil
}

// MintOpen mints the token of an OPEN: for the peer, bound to the
// certificate this connection presented, with the node's principal.
func (c sessionCreds) MintOpen(aud identity.SPIFFEID, cert *x509.Certificate, ttl time.Duration) (string, error) {
	nc, err := c.a.creds.current()
	if err != nil {
		return "", err
	}
	p := identity.PrincipalNode
	if n, ok := c.a.follower.State().Node(c.a.state.NodeID); ok && n.Principal != "" {
		p = identity.Principal(n.Principal)
	}
	tok, _, err := nc.minter.Mint(identity.MintRequest{Audience: []string{aud.String()}, TTL: ttl, Principal: p, BindCert: cert})
	return tok, err
}

// sessionConfig is the speaker's configuration; ln is its listener (nil
// without Listen).
func (a *Agent) sessionConfig(ln net.Listener) session.Config {
	return session.Config{NodeID: a.state.NodeID, Network: a.state.Network, Memberships: a.cfg.Memberships, Listener: ln, Dial: a.cfg.SessionDial,
		Peers: a.cfg.Peers, Credentials: sessionCreds{a}, View: a.view, Verifier: a.verifier, Authorizer: a.authz,
		Handler: a.sessionHandler(), HoldTime: a.cfg.HoldTime, NoHoldTime: a.cfg.NoHoldTime, Limits: a.cfg.SessionLimits,
		Resolve: a.resolver(), Clock: a.cfg.Clock, Logger: a.log.Named("session")}
}

// resolver dials peers configured by node id alone at the address their
// gossip proof names (with gossip only).
func (a *Agent) resolver() func(string) (string, bool) {
	if !a.gossipWanted() {
		return nil
	}
	return a.resolvePeer
}

// sessionsWanted: the agent runs sessions.
func (a *Agent) sessionsWanted() bool {
	return a.cfg.Listen != "" || a.cfg.SessionListener != nil || len(a.cfg.Peers) > 0
}

// newSpeaker binds the session listener and makes the speaker.
func (a *Agent) newSpeaker() (*session.Speaker, error) {
	ln := a.cfg.SessionListener
	if ln == nil && a.cfg.Listen != "" {
		var err error
		if ln, err = net.Listen("tcp", a.cfg.Listen); err != nil {
			return nil, fmt.Errorf("agent: peering sessions on %s: %w (is another agent using it?)", a.cfg.Listen, err)
		}
	}
	s, err := session.New(a.sessionConfig(ln))
	if err != nil {
		if ln != nil {
			ln.Close()
		}
		return nil, err
	}
	if ln != nil {
		a.sessionAddr.Store(ln.Addr().String())
	}
	return s, nil
}

// Speaker is the agent's peering speaker once Run started it, nil before
// or without sessions.
func (a *Agent) Speaker() *session.Speaker { return a.speaker.Load() }

// SessionAddr is where the agent takes peering sessions once Ready, "" if
// it does not.
func (a *Agent) SessionAddr() string {
	if s, ok := a.sessionAddr.Load().(string); ok {
		return s
	}
	return ""
}

// syncPolicy makes the authorizer use the replicated policies of st.
func (a *Agent) syncPolicy(st *trust.State) {
	p := st.Policy()
	if p.Version == a.policyVersion.Load() && a.policySet.Load() {
		return
	}
	ps := policy.Default()
	if p.Text != "" {
		var err error
		if ps, err = policy.ParsePolicies(p.Text); err != nil {
			a.log.Error("replicated policies do not parse; keeping the previous ones", "version", p.Version, "error", err)
			return
		}
	}
	a.authz.SetPolicies(ps)
	a.policyVersion.Store(p.Version)
	a.policySet.Store(true)
}

// runSessions runs the speaker once the agent holds a trust state: before,
// it could check no peer's revocations (a new node's first state comes
// within a blocking query; a restarted one has trust.json).
func (a *Agent) runSessions(s *session.Speaker) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		if err := a.follower.WaitFor(ctx, func(v trust.View) bool { return v.Index() > 0 }); err != nil {
			return nil // ctx ended
		}
		return s.Run(ctx)
	}
}

// sessionHandler tells the router, and the configured handler if any.
func (a *Agent) sessionHandler() session.Handler {
	h := handlers{routerHandler{a}}
	if a.cfg.SessionHandler != nil {
		h = append(h, a.cfg.SessionHandler)
	}
	return h
}
