package cluster

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/keymesh/keymesh/ca"
	"github.com/keymesh/keymesh/cluster/api"
	"github.com/keymesh/keymesh/fsm"
	"github.com/keymesh/keymesh/identity"
	"github.com/keymesh/keymesh/identity/policy"
	"github.com/keymesh/keymesh/identity/trust"
)

// Limits of join tokens an operator may create.
const (
	maxTokenUses   = 10000
	maxTokenTTL    = 30 * 24 * time.Hour
	defaultRootTTL = 24 * time.Hour
	defaultNodeTTL = 24 * time.Hour
	tokenPrefix    = "kmjt."
)

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	_, leader := s.node.raft.LeaderWithID()
	h := api.Health{Status: "ok", Name: s.name, Network: s.network, Leader: string(leader), AppliedIndex: s.store.Index()}
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

// status gathers this server's view.
func (s *Server) status() (api.Status, error) {
	r := s.node.raft
	_, leader := r.LeaderWithID()
	st := api.Status{
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
func (s *Server) servers() ([]api.ServerInfo, error) {
	f := s.node.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var out []api.ServerInfo
	for _, srv := range f.Configuration().Servers {
		info := api.ServerInfo{Name: string(srv.ID), RaftAddr: string(srv.Address), Suffrage: "voter"}
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
			out = append(out, api.ServerInfo{Name: rec.Name, RaftAddr: rec.RaftAddr, APIAddr: rec.APIAddr, Suffrage: "none", Status: rec.Status})
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
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, err.Error())
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

func tokenInfo(t fsm.JoinToken) api.JoinTokenInfo {
	return api.JoinTokenInfo{ID: t.ID, Kind: t.Kind, Principal: t.Principal, NodeID: t.NodeID, Uses: t.Uses, Used: t.Used,
		Expiry: t.Expiry, Revoked: t.Revoked, Description: t.Description, DNSNames: t.DNSNames}
}

// hashToken is how a join token secret is stored: hex sha256.
func hashToken(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// newJoinToken makes a join token secret and its replicated record. A node
// token made without a principal is a NODE token (as the CLI makes it).
func (s *Server) newJoinToken(req api.CreateJoinTokenRequest) (string, fsm.JoinToken, error) {
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
	var req api.CreateJoinTokenRequest
	if !s.decode(w, r, &req) {
		return
	}
	secret, tok, err := s.newJoinToken(req)
	if err != nil {
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, err.Error())
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
	writeJSON(w, http.StatusCreated, api.CreatedJoinToken{JoinTokenInfo: tokenInfo(tok), Secret: secret, Index: idx})
}

func (s *Server) handleListJoinTokens(w http.ResponseWriter, r *http.Request) {
	if !s.maybeConsistent(w, r) {
		return
	}
	out := []api.JoinTokenInfo{}
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
		writeError(w, http.StatusNotFound, api.CodeNotFound, fmt.Sprintf("no join token with id %q; `keymesh tokens list` shows them", id))
		return
	}
	idx, err := s.Propose(r.Context(), fsm.MsgJoinTokenRevoke, fsm.JoinTokenRevoke{ID: id})
	if err != nil {
		s.writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"revoked": id, "index": idx})
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
	var req api.RevokeRequest
	if !s.decode(w, r, &req) {
		return
	}
	kind := fsm.RevocationKind(req.Kind)
	switch kind {
	case fsm.RevocationCert, fsm.RevocationToken, fsm.RevocationKey, fsm.RevocationNode:
	default:
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, fmt.Sprintf("kind must be cert, token, key or node, not %q", req.Kind))
		return
	}
	if req.ID == "" || len(req.ID) > 256 || strings.ContainsAny(req.ID, " /\n\t") {
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, "id must be 1 to 256 characters without spaces or slashes")
		return
	}
	if kind == fsm.RevocationCert {
		serial, err := parseSerial(req.ID)
		if err != nil {
			writeError(w, http.StatusBadRequest, api.CodeBadRequest, err.Error())
			return
		}
		req.ID = serial
	}
	if len(req.Reason) > 512 {
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, "reason is longer than 512 bytes")
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
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, "a node's revocation is kept for good: its id must never come back; drop prune_after")
		return
	case kind == fsm.RevocationNode:
	case req.PruneAfter != nil && known && req.PruneAfter.Before(expiry):
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, fmt.Sprintf("prune_after %s is before the %s expires (%s): the revocation must be kept until then; drop prune_after or give a later time",
			req.PruneAfter.UTC().Format(time.RFC3339), kind, expiry.Format(time.RFC3339)))
		return
	case req.PruneAfter != nil && !req.PruneAfter.After(now):
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, "prune_after is not in the future; drop it or give a later time")
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
	writeJSON(w, http.StatusCreated, api.RevokeResponse{Revocation: stored, Index: idx})
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
		writeError(w, http.StatusNotFound, api.CodeNotFound, fmt.Sprintf("%s %q is not revoked", kind, id))
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

// handleTrust is a blocking query for followers of the trust state: with
// ?index=N it waits (up to ?wait, default 30s, at most Limits.MaxWait)
// until the state moves past N, then answers the trust.Delta since N (a
// full document for N=0, with ?full=true, or when the change history no
// longer covers N). Blocking queries are bounded per caller and in all
// (Limits.MaxBlockingPerClient, Limits.MaxBlockingQueries): the excess
// gets 429 and retries.
func (s *Server) handleTrust(w http.ResponseWriter, r *http.Request, c caller) {
	if !s.allow(w, c, policy.TrustRead, c.ctx) {
		return
	}
	after, wait, ok := s.blockingParams(w, r, 30*time.Second)
	if !ok {
		return
	}
	q := r.URL.Query()
	full := false
	switch v := q.Get("full"); v {
	case "", "false":
	case "true":
		full = true
	default:
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, "full must be true or false")
		return
	}
	if after > 0 && wait > 0 && s.store.Index() <= after {
		who := c.ctx.Subject
		if !s.blocking.acquire(who) {
			writeTooMany(w, time.Second, fmt.Sprintf("blocking queries (at most %d per client and %d in all on this server)",
				s.opts.Limits.MaxBlockingPerClient, s.opts.Limits.MaxBlockingQueries))
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), wait)
		// A stopping server answers its blocking queries at once.
		unhook := context.AfterFunc(s.stopCtx, cancel)
		_, _ = s.store.WaitIndex(ctx, after)
		unhook()
		cancel()
		s.blocking.release(who)
	}
	index, body := s.trustAnswers.answer(s.store, after, full)
	w.Header().Set("X-Keymesh-Index", strconv.FormatUint(index, 10))
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Type", "application/json")
	w.Write(body)
}

// blockingParams reads a blocking query's ?index (default 0) and ?wait
// (default def, at most Limits.MaxWait), or answers 400 and says no.
func (s *Server) blockingParams(w http.ResponseWriter, r *http.Request, def time.Duration) (uint64, time.Duration, bool) {
	q := r.URL.Query()
	var after uint64
	if v := q.Get("index"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			writeError(w, http.StatusBadRequest, api.CodeBadRequest, "index must be a non-negative integer")
			return 0, 0, false
		}
		after = n
	}
	wait := def
	if v := q.Get("wait"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			writeError(w, http.StatusBadRequest, api.CodeBadRequest, "wait must be a duration like 30s")
			return 0, 0, false
		}
		wait = min(d, s.opts.Limits.MaxWait)
	}
	return after, wait, true
}

// trustAnswers keeps the encoded answers of /v1/trust for the state index
// they were built at: the followers of a root mostly sit at the same index,
// so one change is one delta to build and encode, however many followers
// ask for it (and one full document for every follower that starts).
// Answers of an older index are dropped when the state moves; at most
// maxTrustAnswers are kept.
type trustAnswers struct {
	// sign makes the bulletins of a delta's revocations (nil: none).
	sign func(trust.Delta) [][]byte

	mu      sync.Mutex
	index   uint64
	answers map[trustQuery]*trustAnswer
}

type trustQuery struct {
	since uint64 // 0 for a full document
}

type trustAnswer struct {
	once  sync.Once
	index uint64
	body  []byte
}

const maxTrustAnswers = 256

// A trust answer carries bulletins only for at most maxBulletinBatch
// revocations over at most maxBulletinSpan indexes.
const (
	maxBulletinBatch = 64
	maxBulletinSpan  = 4096
)

// answer returns the encoded trust.Delta since after (a full document with
// full or after 0) and the index it brings a follower to.
func (c *trustAnswers) answer(st *fsm.Store, after uint64, full bool) (uint64, []byte) {
	build := func() (uint64, []byte) {
		var d trust.Delta
		st.Read(func(rd fsm.Reader) { d = trust.DeltaFrom(rd, after, full) })
		// Bulletins are for the news: a follower far behind catches up on
		// revocations the gossip carried long ago, and one node asking
		// from many old indexes makes no root sign much.
		if c.sign != nil && !d.Reset && len(d.Put.Revocations) > 0 && len(d.Put.Revocations) <= maxBulletinBatch && d.Index-d.Since <= maxBulletinSpan {
			d.Bulletins = c.sign(d)
		}
		b, err := json.Marshal(d)
		if err != nil {
			panic("cluster: a trust delta does not encode: " + err.Error()) // plain records; cannot happen
		}
		return d.Index, append(b, '\n')
	}
	index := st.Index()
	if after >= index && !full {
		return build() // a follower at or ahead of this replica: an empty answer, cheap
	}
	q := trustQuery{since: after}
	if full {
		q.since = 0
	}
	c.mu.Lock()
	if c.index != index || c.answers == nil {
		c.index, c.answers = index, map[trustQuery]*trustAnswer{}
	}
	a, ok := c.answers[q]
	if !ok {
		if len(c.answers) >= maxTrustAnswers {
			c.mu.Unlock()
			return build()
		}
		a = &trustAnswer{}
		c.answers[q] = a
	}
	c.mu.Unlock()
	// Followers asking the same at once wait for one build. A build reads
	// the state as it is then, maybe past index: a newer answer, as right.
	a.once.Do(func() { a.index, a.body = build() })
	return a.index, a.body
}

// blockingLimiter bounds the blocking queries in flight, per caller and
// in all.
type blockingLimiter struct {
	mu        sync.Mutex
	total     int
	perClient map[string]int
	max, per  int
}

func newBlockingLimiter(max, per int) *blockingLimiter {
	return &blockingLimiter{perClient: map[string]int{}, max: max, per: per}
}

// acquire takes a place for client, or reports that there is none.
func (b *blockingLimiter) acquire(client string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.total >= b.max || b.perClient[client] >= b.per {
		return false
	}
	b.total++
	b.perClient[client]++
	return true
}

func (b *blockingLimiter) release(client string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.total--
	if b.perClient[client]--; b.perClient[client] <= 0 {
		delete(b.perClient, client)
	}
}

// inFlight is how many blocking queries wait now.
func (b *blockingLimiter) inFlight() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.total
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
