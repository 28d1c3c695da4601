package cluster

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/keymesh/keymesh/ca"
	"github.com/keymesh/keymesh/cluster/api"
	"github.com/keymesh/keymesh/fsm"
	"github.com/keymesh/keymesh/identity"
	"github.com/keymesh/keymesh/identity/policy"
	"github.com/keymesh/keymesh/identity/trust"
)

// caller is who makes a request, once authenticated: by a client
// certificate of the network or by a bearer token minted by a member.
type caller struct {
	principal identity.Principal
	ctx       policy.Context
	kind      ca.Kind // root, admin or node
	name      string
}

// authenticate finds the caller of r. A bearer token wins over the client
// certificate; with both, a token bound to a certificate must be bound to
// the one presented.
func (s *Server) authenticate(r *http.Request) (caller, error) {
	if h := r.Header.Get("Authorization"); h != "" {
		tok, ok := strings.CutPrefix(h, "Bearer ")
		if !ok {
			return caller{}, errors.New("the Authorization header must be \"Bearer <token>\"")
		}
		req := identity.VerifyRequest{Token: strings.TrimSpace(tok)}
		if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
			req.PeerCert = r.TLS.PeerCertificates[0]
		}
		v, err := s.verifier.Verify(r.Context(), req)
		if err != nil {
			return caller{}, &tokenRefused{err: err}
		}
		if v.Network != s.network {
			// A federated network's node verifies for peering, not as a
			// caller of this network's roots.
			return caller{}, fmt.Errorf("%w: the token is of network %s", errOtherNetwork, v.Network)
		}
		return caller{principal: v.Claims.Principal, ctx: policy.ContextOf(v, ""), kind: ca.Kind(v.Kind), name: v.Node}, nil
	}
	return s.authenticateCert(r)
}

// authenticateCert finds the caller of r by its client certificate alone,
// whatever else the request carries: renewal trusts the certificate being
// renewed, not a bearer.
func (s *Server) authenticateCert(r *http.Request) (caller, error) {
	id, err := s.callerID(r)
	if err != nil {
		return caller{}, err
	}
	c := caller{kind: id.Kind, name: id.Name, ctx: policy.Context{Subject: id.String(), Node: id.Name, Network: id.Network}}
	switch id.Kind {
	case ca.KindAdmin, ca.KindRoot:
		c.principal = identity.PrincipalAdmin
	case ca.KindNode:
		n, ok := s.store.Node(id.Name)
		if !ok || n.Status != fsm.NodeActive {
			return caller{}, fmt.Errorf("node %q is not an active node of this network", id.Name)
		}
		c.principal = identity.Principal(n.Principal)
	default:
		return caller{}, fmt.Errorf("%s carries no principal", id)
	}
	return c, nil
}

// route registers a handler. action "" is a public call; otherwise the
// caller must authenticate and Cedar must permit the action.
func (s *Server) route(mux *http.ServeMux, pattern string, action policy.Action, h http.HandlerFunc) {
	if action == "" {
		mux.HandleFunc(pattern, s.metrics.instrument(pattern, h))
		return
	}
	s.routeDeciding(mux, pattern, action, func(w http.ResponseWriter, r *http.Request, c caller) {
		if s.allow(w, c, action, c.ctx) {
			h(w, r)
		}
	})
}

// decidingHandler serves a call whose Cedar decision depends on what the
// request hands out or takes away (a join token's principal, a revoked
// thing's owner): it decides with Server.allow once it knows.
type decidingHandler func(w http.ResponseWriter, r *http.Request, c caller)

// routeDeciding registers a handler that is given the authenticated
// caller and decides action itself.
func (s *Server) routeDeciding(mux *http.ServeMux, pattern string, action policy.Action, h decidingHandler) {
	s.routeAuth(mux, pattern, s.authenticate, h)
}

// routeCert registers a call that authenticates by client certificate
// alone and that Cedar decides (action).
func (s *Server) routeCert(mux *http.ServeMux, pattern string, action policy.Action, h decidingHandler) {
	s.routeAuth(mux, pattern, s.authenticateCert, func(w http.ResponseWriter, r *http.Request, c caller) {
		if s.allow(w, c, action, c.ctx) {
			h(w, r, c)
		}
	})
}

func (s *Server) routeAuth(mux *http.ServeMux, pattern string, auth func(*http.Request) (caller, error), h decidingHandler) {
	mux.HandleFunc(pattern, s.metrics.instrument(pattern, func(w http.ResponseWriter, r *http.Request) {
		c, err := auth(r)
		if err != nil {
			s.writeAuthErr(w, err)
			return
		}
		c.ctx.Target = r.PathValue("id")
		h(w, r, c)
	}))
}

// writeAuthErr answers a caller that failed to authenticate.
func (s *Server) writeAuthErr(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, errNoCredential):
		writeError(w, http.StatusUnauthorized, api.CodeUnauthorized,
			"this call needs a client certificate or a bearer token of network "+s.network+" (pass --credential or --token, or set KEYMESH_CREDENTIAL or KEYMESH_TOKEN)")
	case errors.Is(err, trust.ErrNodeRevoked):
		writeError(w, http.StatusForbidden, api.CodeNodeRevoked, err.Error()+"; register the node again under a new id")
	case errors.Is(err, trust.ErrKeyRevoked):
		writeError(w, http.StatusForbidden, api.CodeKeyRevoked, err.Error()+"; the node must register again with a new key")
	case errors.Is(err, trust.ErrCertRevoked):
		writeError(w, http.StatusForbidden, api.CodeCertRevoked, err.Error()+"; the node must register again")
	case errors.As(err, new(*tokenRefused)):
		writeError(w, http.StatusForbidden, api.CodeTokenRefused, err.Error())
	default:
		writeError(w, http.StatusForbidden, api.CodeForbidden, err.Error())
	}
}

// tokenRefused is a bearer token that does not verify.
type tokenRefused struct{ err error }

func (e *tokenRefused) Error() string { return "the bearer token is refused: " + e.err.Error() }
func (e *tokenRefused) Unwrap() error { return e.err }

// allow asks Cedar whether c may take action in ctx and answers 403 when
// not, naming the policies that decided.
func (s *Server) allow(w http.ResponseWriter, c caller, action policy.Action, ctx policy.Context) bool {
	s.syncPolicy()
	d, err := s.authz.Decide(c.principal, action, ctx)
	if err == nil && d.Allow {
		return true
	}
	why := "no policy permits it"
	if len(d.Reasons) > 0 {
		why = "policy " + strings.Join(d.Reasons, ", ") + " forbids it"
	}
	what := string(action)
	switch {
	case ctx.Grant != nil && action == policy.TokenCreate:
		what += fmt.Sprintf(" (a %s join token for principal %s)", ctx.Grant.Kind, ctx.Grant.Principal)
	case ctx.Grant != nil:
		what += fmt.Sprintf(" (for principal %s)", ctx.Grant.Principal)
	case ctx.Revocation != nil:
		what += fmt.Sprintf(" (a %s of %s)", ctx.Revocation.Kind, ownerText(ctx.Revocation))
	case ctx.Anchor != nil:
		what += fmt.Sprintf(" (network %s)", ctx.Anchor.Network)
	}
	writeError(w, http.StatusForbidden, api.CodeForbidden, fmt.Sprintf("principal %s (%s) may not %s: %s; see `keymesh policy get`", c.principal, c.ctx.Subject, what, why))
	return false
}

func ownerText(t *policy.RevocationTarget) string {
	switch t.Owner {
	case policy.OwnerUnknown:
		return "an owner this cluster does not know"
	case policy.OwnerNode:
		return "a " + string(t.Principal) + " node"
	default:
		return "a " + t.Owner
	}
}

// mayGrant refuses (403 escalation_refused) a caller that would hand out,
// or take away, principal q while q may do more than the caller: whatever
// the policies permit, nobody gives a node more than it holds itself.
func (s *Server) mayGrant(w http.ResponseWriter, c caller, q identity.Principal) bool {
	err := s.authz.CheckGrant(c.principal, q, s.network)
	if err == nil {
		return true
	}
	writeError(w, http.StatusForbidden, api.CodeEscalation, err.Error()+"; ask an operator who holds those actions")
	return false
}

// internal registers a leader-plumbing call: current root servers of this
// network only, by client certificate; no Cedar (it is consensus, not
// operation). A removed server, or one whose certificate chain is revoked,
// is refused.
func (s *Server) internal(mux *http.ServeMux, pattern string, h http.HandlerFunc) {
	mux.HandleFunc(pattern, s.metrics.instrument(pattern, func(w http.ResponseWriter, r *http.Request) {
		id, err := s.callerID(r)
		if errors.Is(err, errNoCredential) {
			writeError(w, http.StatusUnauthorized, api.CodeUnauthorized, "internal calls need a root server certificate")
			return
		}
		if err != nil || id.Kind != ca.KindRoot {
			writeError(w, http.StatusForbidden, api.CodeForbidden, "internal calls are for root servers of "+s.network)
			return
		}
		if rec, ok := s.store.Server(id.Name); !ok || rec.Status == fsm.ServerRemoved {
			writeError(w, http.StatusForbidden, api.CodeForbidden, fmt.Sprintf("root server %q is not a member of this cluster", id.Name))
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), rootCallerKey{}, id.Name)))
	}))
}

// watchTrust keeps the verifier and the authorizer in step with the
// replicated state: every change of the JWKS, revocations, nodes or anchors
// empties the verifier's caches; a new policy version is parsed and swapped
// in.
func (s *Server) watchTrust(ctx context.Context) error {
	var seen uint64
	for {
		idx, err := s.store.WaitIndex(ctx, seen)
		if err != nil {
			return nil
		}
		s.refreshTrust(seen)
		seen = idx
	}
}

// refreshTrust applies what changed after index since.
func (s *Server) refreshTrust(since uint64) {
	ch := s.store.Changes(since)
	anchors, keys, cas, peers := ch.Reset, ch.Reset, ch.Reset, ch.Reset
	for _, t := range ch.Tables {
		switch t.Table {
		case fsm.TableCAs:
			cas = true
		case fsm.TableTrustAnchors:
			anchors = true
		case fsm.TableRevocations:
			keys = true
			// A token's revocation cannot end a Raft connection.
			peers = peers || slices.ContainsFunc(t.Put, notTokenRevocation) || slices.ContainsFunc(t.Deleted, notTokenRevocation)
		case fsm.TableJWKS, fsm.TableNodes, fsm.TableServers, fsm.TableIssuers:
			keys, peers = true, true
		}
	}
	if anchors {
		if a, err := trust.Anchors(s.store, s.network); err == nil {
			s.verifier.SetAnchors(a)
		} else {
			s.log.Error("trust anchors in the state do not parse", "error", err)
		}
	}
	if anchors || keys {
		s.verifier.Invalidate()
	}
	if cas && since > 0 {
		ctx, cancel := context.WithTimeout(context.Background(), s.opts.Limits.RequestTimeout)
		s.followSealKey(ctx)
		cancel()
	}
	if peers && s.node != nil {
		if n := s.node.stream.recheck(); n > 0 {
			s.log.Warn("closed Raft connections of peers whose certificates are revoked", "connections", n)
		}
	}
}

// notTokenRevocation reports whether a revocations table key (kind:id) is
// not a token's.
func notTokenRevocation(key string) bool {
	return !strings.HasPrefix(key, string(fsm.RevocationToken)+":")
}

// syncPolicy makes the authorizer use the policy set of the local replica
// as it is now: every decision follows the replicated policies, including
// one committed a moment ago through this server.
func (s *Server) syncPolicy() {
	p := s.store.Policy()
	if p.Version == s.policyVersion.Load() {
		return
	}
	s.policyMu.Lock()
	defer s.policyMu.Unlock()
	if p.Version == s.policyVersion.Load() {
		return
	}
	defer s.policyVersion.Store(p.Version)
	if p.Text == "" {
		s.authz.SetPolicies(policy.Default())
		return
	}
	ps, err := policy.ParsePolicies(p.Text)
	if err != nil {
		// It was validated before it was proposed; a replica that cannot
		// parse it keeps what it had, loudly.
		s.log.Error("replicated policy does not parse; keeping the previous one", "version", p.Version, "error", err)
		return
	}
	s.authz.SetPolicies(ps)
}

func (s *Server) handleGetPolicy(w http.ResponseWriter, r *http.Request) {
	p := s.store.Policy()
	doc := api.PolicyDoc{Text: p.Text, Version: p.Version}
	if p.Text == "" {
		doc.Text, doc.Default = policy.DefaultText(), true
	}
	writeJSON(w, http.StatusOK, doc)
}

func (s *Server) handleSetPolicy(w http.ResponseWriter, r *http.Request, c caller) {
	if !s.allow(w, c, policy.PolicyWrite, c.ctx) {
		return
	}
	var req api.SetPolicyRequest
	if !s.decode(w, r, &req) {
		return
	}
	if strings.TrimSpace(req.Text) == "" {
		req.Text = "" // back to the built-in policies
	}
	ps, err := policy.ParsePolicies(req.Text)
	if req.Text == "" {
		ps, err = policy.Default(), nil
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, api.CodeInvalidPolicy, err.Error())
		return
	}
	if req.Force && c.principal != identity.PrincipalAdmin {
		writeError(w, http.StatusForbidden, api.CodeForbidden, "only ADMIN may force a policy set")
		return
	}
	if d, _ := policy.NewAuthorizer(ps).Decide(identity.PrincipalAdmin, policy.PolicyWrite, policy.Context{Network: s.network}); !d.Allow && !req.Force {
		writeError(w, http.StatusBadRequest, api.CodeBadRequest,
			"under this policy set ADMIN may no longer write policies, which locks every operator out of changing it; send force to set it anyway")
		return
	}
	s.syncPolicy()
	if beyond := policy.GrantsBeyond(s.authz.Policies(), ps, c.principal, s.network); len(beyond) > 0 {
		var what []string
		for _, g := range beyond {
			what = append(what, string(g.Principal)+" "+string(g.Action))
		}
		writeError(w, http.StatusForbidden, api.CodeEscalation, fmt.Sprintf("principal %s may not give what it does not hold: this policy set grants %s; ask an ADMIN",
			c.principal, strings.Join(what, ", ")))
		return
	}
	idx, err := s.Propose(r.Context(), fsm.MsgPolicySet, fsm.PolicySet{Text: req.Text, ExpectVersion: req.ExpectVersion})
	if err != nil {
		s.writeErr(w, err)
		return
	}
	p := s.store.Policy()
	s.log.Info("policy set", "version", p.Version, "index", idx, "by", c.ctx.Subject)
	writeJSON(w, http.StatusOK, api.PolicyDoc{Text: p.Text, Version: p.Version})
}

// verifyToken verifies a token against the live replicated state: a
// revocation is refused here as soon as it is applied.
func (s *Server) verifyToken(ctx context.Context, req api.TokenRequest) (api.Verification, identity.Verified) {
	vr := identity.VerifyRequest{Token: req.Token}
	if req.Audience != "" {
		vr.Audience = []string{req.Audience}
	}
	if len(req.PeerCert) > 0 {
		c, err := x509.ParseCertificate(req.PeerCert)
		if err != nil {
			return api.Verification{Reason: "bad_request", Message: "peer_cert is not a DER certificate: " + err.Error()}, identity.Verified{}
		}
		vr.PeerCert = c
	}
	v, err := s.verifier.Verify(ctx, vr)
	if err != nil {
		out := api.Verification{Message: err.Error(), Reason: "invalid"}
		var ve *identity.VerifyError
		if errors.As(err, &ve) {
			out.Reason = ve.Reason
		}
		return out, v
	}
	return api.Verification{Valid: true, Node: v.Node, Network: v.Network, Principal: string(v.Claims.Principal), KID: v.KID, Claims: &v.Claims}, v
}

func (s *Server) handleVerify(w http.ResponseWriter, r *http.Request) {
	var req api.TokenRequest
	if !s.decode(w, r, &req) {
		return
	}
	out, _ := s.verifyToken(r.Context(), req)
	writeJSON(w, http.StatusOK, out)
}

// handleAuthorize answers, for a token, which actions its principal may
// take under the replicated policies.
func (s *Server) handleAuthorize(w http.ResponseWriter, r *http.Request) {
	var req api.TokenRequest
	if !s.decode(w, r, &req) {
		return
	}
	out, v := s.verifyToken(r.Context(), req)
	if out.Valid {
		out.Actions = s.authz.Allowed(v.Claims.Principal, policy.ContextOf(v, ""))
	}
	writeJSON(w, http.StatusOK, out)
}

// jwksCache is the encoded JWKS document of one state index.
type jwksCache struct {
	index uint64
	body  []byte
	etag  string
}

// jwksDoc encodes the published keys (active and retiring) of the JWKS.
func (s *Server) jwksDoc() (jwksCache, error) {
	idx := s.store.Index()
	if c := s.jwks.Load(); c != nil && c.index == idx {
		return *c, nil
	}
	var set identity.JWKS
	for _, rec := range s.store.JWKS() {
		if rec.State != fsm.JWKActive && rec.State != fsm.JWKRetiring {
			continue
		}
		// A revoked key, or a key of a revoked node, is not published:
		// whoever verifies by this document alone (a federated network's
		// roots, a jwx client) stops taking it at its next fetch.
		if _, ok := s.store.Revoked(fsm.RevocationKey, rec.KID); ok {
			continue
		}
		if _, ok := s.store.Revoked(fsm.RevocationNode, rec.Node); ok {
			continue
		}
		var j identity.JWK
		if err := json.Unmarshal(rec.Key, &j); err != nil {
			return jwksCache{}, fmt.Errorf("cluster: JWKS entry %s: %w", rec.KID, err)
		}
		set.Keys = append(set.Keys, j)
	}
	if set.Keys == nil {
		set.Keys = []identity.JWK{}
	}
	body, err := set.Encode()
	if err != nil {
		return jwksCache{}, err
	}
	c := jwksCache{index: idx, body: body, etag: identity.ETag(body)}
	s.jwks.Store(&c)
	return c, nil
}

// jwksMaxAge is how long clients may cache the JWKS.
const jwksMaxAge = "public, max-age=30"

func (s *Server) handleJWKS(w http.ResponseWriter, r *http.Request) {
	c, err := s.jwksDoc()
	if err != nil {
		s.writeErr(w, err)
		return
	}
	w.Header().Set("Cache-Control", jwksMaxAge)
	w.Header().Set("ETag", c.etag)
	if match := r.Header.Get("If-None-Match"); match != "" && match == c.etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.Header().Set("Content-Type", "application/jwk-set+json")
	w.Write(c.body)
}

func (s *Server) handleDiscovery(w http.ResponseWriter, r *http.Request) {
	issuer := "https://" + s.apiAddr
	w.Header().Set("Cache-Control", jwksMaxAge)
	writeJSONCached(w, identity.NewDiscovery(issuer, issuer+"/.well-known/jwks.json"))
}
