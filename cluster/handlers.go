package cluster

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/raft"

	"github.com/keymesh/keymesh/ca"
	"github.com/keymesh/keymesh/fsm"
	"github.com/keymesh/keymesh/identity"
	"github.com/keymesh/keymesh/identity/policy"
)

// Limits of join tokens an operator may create.
const (
	maxTokenUses   = 10000
	maxTokenTTL    = 30 * 24 * time.Hour
	defaultRootTTL = 24 * time.Hour
	defaultNodeTTL = 24 * time.Hour
	tokenPrefix    = "kmjt."
)

// Health is the answer of GET /v1/sys/health.
type Health struct {
	Status       string `json:"status"` // "ok" when a leader is known, "no_leader" otherwise
	Name         string `json:"name"`
	Network      string `json:"network"`
	Leader       string `json:"leader,omitempty"`
	AppliedIndex uint64 `json:"applied_index"`
}

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	_, leader := s.node.raft.LeaderWithID()
	h := Health{Status: "ok", Name: s.name, Network: s.network, Leader: string(leader), AppliedIndex: s.store.Index()}
	status := http.StatusOK
	if leader == "" {
		h.Status, status = "no_leader", http.StatusServiceUnavailable
	}
	writeJSON(w, status, h)
}

// handleBundle serves the PEM bundle of the network: AS roots first, then the
// issuing intermediates of the root servers.
func (s *Server) handleBundle(w http.ResponseWriter, r *http.Request) {
	var out []byte
	if rec, ok := s.store.CA(s.network); ok {
		for _, der := range append([][]byte{rec.Active}, rec.Prepared...) {
			out = append(out, certChainPEM([][]byte{der})...)
		}
	}
	for _, is := range s.store.Issuers() {
		if is.Status == "active" {
			out = append(out, certChainPEM([][]byte{is.Cert})...)
		}
	}
	w.Header().Set("Content-Type", "application/x-pem-file")
	w.Header().Set("Cache-Control", "max-age=60")
	w.Write(out)
}

// ServerInfo describes one root server in status answers.
type ServerInfo struct {
	Name     string `json:"name"`
	RaftAddr string `json:"raft_addr"`
	APIAddr  string `json:"api_addr"`
	Suffrage string `json:"suffrage"` // "voter", "nonvoter" or "none" (known to the state but not to Raft)
	Status   string `json:"status"`   // the replicated record's status
}

// Status is the answer of GET /v1/cluster/status: the view of the server
// that answers.
type Status struct {
	Name         string       `json:"name"`
	Network      string       `json:"network"`
	State        string       `json:"state"`
	Leader       string       `json:"leader,omitempty"`
	Term         uint64       `json:"term"`
	CommitIndex  uint64       `json:"commit_index"`
	AppliedIndex uint64       `json:"applied_index"`
	LastLogIndex uint64       `json:"last_log_index"`
	StateHash    string       `json:"state_hash"`
	Servers      []ServerInfo `json:"servers"`
}

// status gathers this server's view.
func (s *Server) status() (Status, error) {
	r := s.node.raft
	_, leader := r.LeaderWithID()
	st := Status{
		Name: s.name, Network: s.network, State: r.State().String(), Leader: string(leader),
		Term: r.CurrentTerm(), LastLogIndex: r.LastIndex(),
	}
	st.CommitIndex, _ = strconv.ParseUint(r.Stats()["commit_index"], 10, 64)
	st.StateHash, st.AppliedIndex = hashIndex(s.store)
	servers, err := s.servers()
	st.Servers = servers
	return st, err
}

// servers merges the Raft configuration with the replicated server records.
func (s *Server) servers() ([]ServerInfo, error) {
	f := s.node.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var out []ServerInfo
	for _, srv := range f.Configuration().Servers {
		info := ServerInfo{Name: string(srv.ID), RaftAddr: string(srv.Address), Suffrage: "voter"}
		if srv.Suffrage != raft.Voter {
			info.Suffrage = "nonvoter"
		}
		if rec, ok := s.store.Server(info.Name); ok {
			info.APIAddr, info.Status = rec.APIAddr, rec.Status
		}
		seen[info.Name] = true
		out = append(out, info)
	}
	for _, rec := range s.store.Servers() {
		if !seen[rec.Name] {
			out = append(out, ServerInfo{Name: rec.Name, RaftAddr: rec.RaftAddr, APIAddr: rec.APIAddr, Suffrage: "none", Status: rec.Status})
		}
	}
	return out, nil
}

func (s *Server) handleStatus(w http.ResponseWriter, r *http.Request) {
	st, err := s.status()
	if err != nil {
		s.writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func (s *Server) handlePeers(w http.ResponseWriter, r *http.Request) {
	servers, err := s.servers()
	if err != nil {
		s.writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, servers)
}

func (s *Server) handleRemoveServer(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("id")
	if err := ca.ValidateName(name); err != nil {
		writeError(w, http.StatusBadRequest, codeBadRequest, err.Error())
		return
	}
	err := s.onLeader(r.Context(), "/v1/internal/remove-server", removeServerRequest{Name: name}, &struct{}{}, func(ctx context.Context) error {
		return s.removeServer(ctx, name)
	})
	if err != nil {
		s.writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"removed": name})
}

// CreateJoinTokenRequest is the body of POST /v1/join-tokens.
type CreateJoinTokenRequest struct {
	Kind        string `json:"kind"`                // "root" or "node"
	Principal   string `json:"principal,omitempty"` // for node tokens: the principal the node gets
	NodeID      string `json:"node_id,omitempty"`   // optional constraint: only this node id may use it
	Uses        int    `json:"uses,omitempty"`      // default 1
	TTL         string `json:"ttl,omitempty"`       // Go duration, default 24h, at most 720h
	Description string `json:"description,omitempty"`
	// DNSNames are DNS names under the network's domain that a node
	// joining with the token may hold besides <node-id>.<network>.
	DNSNames []string `json:"dns_names,omitempty"`
}

// JoinTokenInfo is a join token as listed: everything but the secret.
type JoinTokenInfo struct {
	ID          string    `json:"id"`
	Kind        string    `json:"kind"`
	Principal   string    `json:"principal,omitempty"`
	NodeID      string    `json:"node_id,omitempty"`
	Uses        int       `json:"uses"`
	Used        int       `json:"used"`
	Expiry      time.Time `json:"expiry"`
	Revoked     bool      `json:"revoked"`
	Description string    `json:"description,omitempty"`
	DNSNames    []string  `json:"dns_names,omitempty"`
}

// CreatedJoinToken is the answer of POST /v1/join-tokens; the secret is
// shown this once.
type CreatedJoinToken struct {
	JoinTokenInfo
	Secret string `json:"secret"`
	Index  uint64 `json:"index"`
}

func tokenInfo(t fsm.JoinToken) JoinTokenInfo {
	return JoinTokenInfo{ID: t.ID, Kind: t.Kind, Principal: t.Principal, NodeID: t.NodeID, Uses: t.Uses, Used: t.Used,
		Expiry: t.Expiry, Revoked: t.Revoked, Description: t.Description, DNSNames: t.DNSNames}
}

// hashToken is how a join token secret is stored: hex sha256.
func hashToken(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// newJoinToken makes a join token secret and its replicated record. A node
// token made without a principal is a NODE token (as the CLI makes it).
func (s *Server) newJoinToken(req CreateJoinTokenRequest) (string, fsm.JoinToken, error) {
	if req.Kind != fsm.TokenKindRoot && req.Kind != fsm.TokenKindNode {
		return "", fsm.JoinToken{}, fmt.Errorf("kind must be \"root\" or \"node\", not %q", req.Kind)
	}
	switch {
	case req.Kind == fsm.TokenKindRoot && req.Principal != "":
		return "", fsm.JoinToken{}, errors.New("principal applies to node tokens only: a root server holds the AS root")
	case req.Kind == fsm.TokenKindNode && req.Principal == "":
		req.Principal = fsm.PrincipalNode
	case req.Kind == fsm.TokenKindNode && !validPrincipal(req.Principal):
		return "", fsm.JoinToken{}, fmt.Errorf("principal %q is not one of ADMIN, NODE, NODE_CUSTODIAN, DATA_CUSTODIAN, USER", req.Principal)
	}
	if req.Uses == 0 {
		req.Uses = 1
	}
	if req.Uses < 0 || req.Uses > maxTokenUses {
		return "", fsm.JoinToken{}, fmt.Errorf("uses must be between 1 and %d, not %d", maxTokenUses, req.Uses)
	}
	ttl := defaultNodeTTL
	if req.Kind == fsm.TokenKindRoot {
		ttl = defaultRootTTL
	}
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil {
			return "", fsm.JoinToken{}, fmt.Errorf("ttl %q is not a duration like 30m or 24h", req.TTL)
		}
		ttl = d
	}
	if ttl <= 0 || ttl > maxTokenTTL {
		return "", fsm.JoinToken{}, fmt.Errorf("ttl must be positive and at most %s, not %s", maxTokenTTL, ttl)
	}
	if req.NodeID != "" {
		if err := ca.ValidateNodeID(req.NodeID); err != nil {
			return "", fsm.JoinToken{}, err
		}
	}
	if len(req.Description) > 256 {
		return "", fsm.JoinToken{}, fmt.Errorf("description is longer than 256 bytes")
	}
	if len(req.DNSNames) > 0 && req.Kind != fsm.TokenKindNode {
		return "", fsm.JoinToken{}, errors.New("dns_names applies to node tokens only")
	}
	if len(req.DNSNames) > maxDNSNames {
		return "", fsm.JoinToken{}, fmt.Errorf("at most %d DNS names, not %d", maxDNSNames, len(req.DNSNames))
	}
	for _, d := range req.DNSNames {
		if err := ca.ValidateNetwork(d); err != nil || !strings.HasSuffix(d, "."+s.network) {
			return "", fsm.JoinToken{}, fmt.Errorf("DNS name %q is not a lower-case host name under the network's domain %s", d, s.network)
		}
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", fsm.JoinToken{}, err
	}
	secret := tokenPrefix + base64.RawURLEncoding.EncodeToString(raw)
	h := hashToken(secret)
	return secret, fsm.JoinToken{
		ID: h[:16], Hash: h, Kind: req.Kind, Principal: req.Principal, NodeID: req.NodeID,
		Uses: req.Uses, Expiry: s.opts.Clock().Add(ttl).UTC().Truncate(time.Second), Description: req.Description,
		DNSNames: req.DNSNames,
	}, nil
}

// grantOf is what a join token hands out, for Cedar: a root-join token
// hands out ADMIN (the root server that joins receives the AS root).
func grantOf(t fsm.JoinToken, now time.Time) policy.Grant {
	p := identity.Principal(t.Principal)
	if t.Kind == fsm.TokenKindRoot {
		p = identity.PrincipalAdmin
	} else if p == "" {
		p = identity.PrincipalNode
	}
	return policy.Grant{Kind: t.Kind, Principal: p, Uses: t.Uses, TTL: t.Expiry.Sub(now).Round(time.Second)}
}

func (s *Server) handleCreateJoinToken(w http.ResponseWriter, r *http.Request, c caller) {
	var req CreateJoinTokenRequest
	if !s.decode(w, r, &req) {
		return
	}
	secret, tok, err := s.newJoinToken(req)
	if err != nil {
		writeError(w, http.StatusBadRequest, codeBadRequest, err.Error())
		return
	}
	grant := grantOf(tok, s.opts.Clock())
	ctx := c.ctx
	ctx.Grant = &grant
	if !s.allow(w, c, policy.TokenCreate, ctx) || !s.mayGrant(w, c, grant.Principal) {
		return
	}
	idx, err := s.Propose(r.Context(), fsm.MsgJoinTokenCreate, fsm.JoinTokenCreate{Token: tok})
	if err != nil {
		s.writeErr(w, err)
		return
	}
	s.log.Info("join token created", "id", tok.ID, "kind", tok.Kind, "principal", grant.Principal, "uses", tok.Uses, "by", c.ctx.Subject)
	writeJSON(w, http.StatusCreated, CreatedJoinToken{JoinTokenInfo: tokenInfo(tok), Secret: secret, Index: idx})
}

func (s *Server) handleListJoinTokens(w http.ResponseWriter, r *http.Request) {
	if !s.maybeConsistent(w, r) {
		return
	}
	out := []JoinTokenInfo{}
	for _, t := range s.store.JoinTokens() {
		out = append(out, tokenInfo(t))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleRevokeJoinToken(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	_, ok, err := lookupConsistent(r.Context(), s, s.store.JoinTokenByID, id)
	if err != nil {
		s.writeErr(w, err)
		return
	}
	if !ok {
		writeError(w, http.StatusNotFound, codeNotFound, fmt.Sprintf("no join token with id %q; `keymesh tokens list` shows them", id))
		return
	}
	idx, err := s.Propose(r.Context(), fsm.MsgJoinTokenRevoke, fsm.JoinTokenRevoke{ID: id})
	if err != nil {
		s.writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"revoked": id, "index": idx})
}

// RevokeRequest is the body of POST /v1/revocations.
type RevokeRequest struct {
	Kind   string `json:"kind"` // cert, token, key or node
	ID     string `json:"id"`   // certificate serial (hex), token jti, key id, or node id
	Reason string `json:"reason,omitempty"`
	// PruneAfter is when the revoked thing would have expired anyway; the
	// revocation is dropped after it. Default: the certificate's or key's
	// end of life when the state knows it, else 30 days from now; never for
	// nodes.
	PruneAfter *time.Time `json:"prune_after,omitempty"`
}

// RevokeResponse is the answer of POST /v1/revocations.
type RevokeResponse struct {
	Revocation fsm.Revocation `json:"revocation"`
	Index      uint64         `json:"index"`
}

// expiryOf is when a revoked certificate or key would have expired anyway,
// from the replicated state: an issued certificate's or an issuing
// intermediate's NotAfter, a key's end of life. known is false for what
// the state does not know (a token's jti, a foreign serial).
func (s *Server) expiryOf(kind fsm.RevocationKind, id string) (time.Time, bool) {
	switch kind {
	case fsm.RevocationCert:
		for _, is := range s.store.Issuers() {
			if c, ok := s.store.Issued(is.ID, id); ok {
				return c.NotAfter.UTC(), true
			}
			if cert, err := x509.ParseCertificate(is.Cert); err == nil && fsm.FormatSerial(cert.SerialNumber) == id {
				return cert.NotAfter.UTC(), true
			}
		}
	case fsm.RevocationKey:
		if k, ok := s.store.JWK(id); ok && !k.NotAfter.IsZero() {
			return k.NotAfter.UTC(), true
		}
	}
	return time.Time{}, false
}

// defaultRevocationLife is how long a revocation of unknown expiry is kept.
const defaultRevocationLife = 30 * 24 * time.Hour

func (s *Server) handleRevoke(w http.ResponseWriter, r *http.Request, c caller) {
	var req RevokeRequest
	if !s.decode(w, r, &req) {
		return
	}
	kind := fsm.RevocationKind(req.Kind)
	switch kind {
	case fsm.RevocationCert, fsm.RevocationToken, fsm.RevocationKey, fsm.RevocationNode:
	default:
		writeError(w, http.StatusBadRequest, codeBadRequest, fmt.Sprintf("kind must be cert, token, key or node, not %q", req.Kind))
		return
	}
	if req.ID == "" || len(req.ID) > 256 || strings.ContainsAny(req.ID, " /\n\t") {
		writeError(w, http.StatusBadRequest, codeBadRequest, "id must be 1 to 256 characters without spaces or slashes")
		return
	}
	if kind == fsm.RevocationCert {
		serial, err := parseSerial(req.ID)
		if err != nil {
			writeError(w, http.StatusBadRequest, codeBadRequest, err.Error())
			return
		}
		req.ID = serial
	}
	if len(req.Reason) > 512 {
		writeError(w, http.StatusBadRequest, codeBadRequest, "reason is longer than 512 bytes")
		return
	}
	target := s.revocationTarget(kind, req.ID)
	ctx := c.ctx
	ctx.Target, ctx.Revocation = req.ID, &target
	if !s.allow(w, c, policy.RevocationCreate, ctx) {
		return
	}
	if target.Principal != "" && !s.mayGrant(w, c, target.Principal) {
		return
	}
	now := s.opts.Clock()
	rev := fsm.Revocation{Kind: kind, ID: req.ID, Reason: req.Reason}
	expiry, known := s.expiryOf(kind, req.ID)
	switch {
	case kind == fsm.RevocationNode && req.PruneAfter != nil:
		writeError(w, http.StatusBadRequest, codeBadRequest, "a node's revocation is kept for good: its id must never come back; drop prune_after")
		return
	case kind == fsm.RevocationNode:
	case req.PruneAfter != nil && known && req.PruneAfter.Before(expiry):
		writeError(w, http.StatusBadRequest, codeBadRequest, fmt.Sprintf("prune_after %s is before the %s expires (%s): the revocation must be kept until then; drop prune_after or give a later time",
			req.PruneAfter.UTC().Format(time.RFC3339), kind, expiry.Format(time.RFC3339)))
		return
	case req.PruneAfter != nil && !req.PruneAfter.After(now):
		writeError(w, http.StatusBadRequest, codeBadRequest, "prune_after is not in the future; drop it or give a later time")
		return
	case req.PruneAfter != nil:
		rev.PruneAfter = req.PruneAfter.UTC()
	case known:
		rev.PruneAfter = expiry
	default:
		rev.PruneAfter = now.Add(defaultRevocationLife).UTC().Truncate(time.Second)
	}
	idx, err := s.Propose(r.Context(), fsm.MsgRevoke, fsm.Revoke{Revocation: rev})
	if err != nil {
		s.writeErr(w, err)
		return
	}
	stored, _ := s.store.Revoked(kind, req.ID)
	s.log.Info("revoked", "kind", kind, "id", req.ID, "by", c.ctx.Subject, "index", idx)
	writeJSON(w, http.StatusCreated, RevokeResponse{Revocation: stored, Index: idx})
}

// revocationTarget says whose the thing a revocation names is, from the
// replicated state: a node's (with its principal), a root server's (its
// issuing intermediate, or a key it owns: the admin credential), or
// unknown (a token id, a serial or kid the state does not hold).
func (s *Server) revocationTarget(kind fsm.RevocationKind, id string) policy.RevocationTarget {
	t := policy.RevocationTarget{Kind: string(kind), Owner: policy.OwnerUnknown}
	ofNode := func(nodeID string) bool {
		n, ok := s.store.Node(nodeID)
		if ok {
			t.Owner, t.Principal = policy.OwnerNode, identity.Principal(n.Principal)
		}
		return ok
	}
	switch kind {
	case fsm.RevocationNode:
		ofNode(id)
	case fsm.RevocationCert:
		for _, is := range s.store.Issuers() {
			if c, ok := s.store.Issued(is.ID, id); ok && ofNode(c.NodeID) {
				return t
			}
			if cert, err := x509.ParseCertificate(is.Cert); err == nil && fsm.FormatSerial(cert.SerialNumber) == id {
				t.Owner, t.Principal = policy.OwnerRoot, identity.PrincipalAdmin
				return t
			}
		}
	case fsm.RevocationKey:
		if k, ok := s.store.JWK(id); ok && !ofNode(k.Node) {
			if _, isServer := s.store.Server(k.Node); isServer {
				t.Owner, t.Principal = policy.OwnerAdmin, identity.PrincipalAdmin
			}
		}
	}
	return t
}

func (s *Server) handleListRevocations(w http.ResponseWriter, r *http.Request) {
	if !s.maybeConsistent(w, r) {
		return
	}
	kind := r.URL.Query().Get("kind")
	out := []fsm.Revocation{}
	for _, rev := range s.store.Revocations() {
		if kind == "" || string(rev.Kind) == kind {
			out = append(out, rev)
		}
	}
	w.Header().Set("X-Keymesh-Index", strconv.FormatUint(s.store.Index(), 10))
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleGetRevocation(w http.ResponseWriter, r *http.Request) {
	if !s.maybeConsistent(w, r) {
		return
	}
	kind, id := r.PathValue("kind"), r.PathValue("id")
	rev, ok := s.store.Revoked(fsm.RevocationKind(kind), id)
	w.Header().Set("X-Keymesh-Index", strconv.FormatUint(s.store.Index(), 10))
	if !ok {
		writeError(w, http.StatusNotFound, codeNotFound, fmt.Sprintf("%s %q is not revoked", kind, id))
		return
	}
	writeJSON(w, http.StatusOK, rev)
}

// maybeConsistent makes the read linearizable when ?consistent=true.
func (s *Server) maybeConsistent(w http.ResponseWriter, r *http.Request) bool {
	if v := r.URL.Query().Get("consistent"); v == "" || v == "false" {
		return true
	}
	if err := s.ConsistentRead(r.Context()); err != nil {
		s.writeErr(w, err)
		return false
	}
	return true
}

// Trust is the answer of GET /v1/trust: everything a verifier needs — the
// trust anchors and access list, the revocations, the JWKS, and the nodes
// and root servers that own keys (for their status and principal).
type Trust struct {
	Index       uint64            `json:"index"`
	Network     string            `json:"network"`
	Anchors     []fsm.TrustAnchor `json:"anchors"`
	Revocations []fsm.Revocation  `json:"revocations"`
	JWKS        []fsm.JWK         `json:"jwks"`
	Nodes       []fsm.Node        `json:"nodes"`
	Servers     []fsm.Server      `json:"servers"`
}

// handleTrust is a blocking query: with ?index=N it waits (up to ?wait,
// default 30s, at most Limits.MaxWait) until the state moves past N.
func (s *Server) handleTrust(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var after uint64
	if v := q.Get("index"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			writeError(w, http.StatusBadRequest, codeBadRequest, "index must be a non-negative integer")
			return
		}
		after = n
	}
	wait := 30 * time.Second
	if v := q.Get("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			writeError(w, http.StatusBadRequest, codeBadRequest, "wait must be a duration like 30s")
			return
		}
		wait = min(d, s.opts.Limits.MaxWait)
	}
	if after > 0 && s.store.Index() <= after {
		ctx, cancel := context.WithTimeout(r.Context(), wait)
		_, _ = s.store.WaitIndex(ctx, after)
		cancel()
	}
	t := s.trustDoc()
	w.Header().Set("X-Keymesh-Index", strconv.FormatUint(t.Index, 10))
	writeJSON(w, http.StatusOK, t)
}

// parseSerial accepts a certificate serial as operators copy it (hex, any
// case, with or without colons and leading zeros, as openssl prints it) and
// returns its canonical form.
func parseSerial(s string) (string, error) {
	clean := strings.ToLower(strings.ReplaceAll(s, ":", ""))
	n, ok := new(big.Int).SetString(clean, 16)
	if !ok || n.Sign() <= 0 || len(clean) > 64 {
		return "", fmt.Errorf("certificate serial %q is not a positive hex number (as `openssl x509 -serial` prints it)", s)
	}
	return fsm.FormatSerial(n), nil
}

// trustDoc is the trust document of the local replica. Reads are not one
// atomic view; the index is taken first, so a reader that resumes from it
// sees anything that moved meanwhile again.
func (s *Server) trustDoc() Trust {
	return Trust{Index: s.store.Index(), Network: s.network, Anchors: s.store.TrustAnchors(),
		Revocations: s.store.Revocations(), JWKS: s.store.JWKS(), Nodes: s.store.Nodes(), Servers: s.store.Servers()}
}
