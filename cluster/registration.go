package cluster

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/keymesh/keymesh/ca"
	"github.com/keymesh/keymesh/cluster/api"
	"github.com/keymesh/keymesh/fsm"
	"github.com/keymesh/keymesh/identity"
	"github.com/keymesh/keymesh/identity/policy"
)

// Limits of one registration request.
const (
	maxDNSNames     = 16
	collectSkew     = 5 * time.Minute
	possessionCtx   = "collect"
	registrationTag = "reg-"
)

func registrationInfo(r fsm.Registration) api.RegistrationInfo {
	return api.RegistrationInfo{ID: r.ID, NodeID: r.NodeID, Network: r.Network, Principal: r.Principal, DNSNames: r.DNSNames,
		Status: r.Status, Reason: r.Reason, Serial: r.Serial, Issuer: r.Issuer, Created: r.Created}
}

// rateLimited is returned when a limit refuses a request.
type rateLimited struct {
	what string
	wait time.Duration
}

func (e *rateLimited) Error() string { return e.what + " is over its rate limit" }

func forbidden(format string, args ...any) error {
	return &api.APIError{Status: http.StatusForbidden, Code: api.CodeForbidden, Message: fmt.Sprintf(format, args...)}
}

func conflict(format string, args ...any) error {
	return &api.APIError{Status: http.StatusConflict, Code: api.CodeConflict, Message: fmt.Sprintf(format, args...)}
}

// signNode signs a node certificate with this server's issuer, within the
// signing rate. It returns the issuance record, the chain (leaf, issuing
// intermediate) and the key's JWKS entry.
func (s *Server) signNode(pub any, nodeID string, dns []string) (fsm.Issued, [][]byte, *fsm.JWK, error) {
	now := s.opts.Clock()
	if wait, ok := take(s.signLimit, now); !ok {
		return fsm.Issued{}, nil, nil, &rateLimited{what: "certificate signing on this server", wait: wait}
	}
	cert, err := ca.SignNode(s.issuer, ca.NodeRequest{PublicKey: pub, Network: s.network, NodeID: nodeID, DNSNames: dns,
		Validity: s.opts.Limits.NodeCertValidity, Now: now}, nil)
	if err != nil {
		return fsm.Issued{}, nil, nil, badRequest("cannot sign a certificate for this request: %v", err)
	}
	s.metrics.signed.Inc()
	key, err := nodeJWK([]*x509.Certificate{cert, s.issuer.Cert})
	if err != nil {
		return fsm.Issued{}, nil, nil, badRequest("cannot publish this key: %v", err)
	}
	issued := fsm.Issued{Issuer: s.name, Serial: fsm.FormatSerial(cert.SerialNumber), NodeID: nodeID, NotAfter: cert.NotAfter, Cert: cert.Raw}
	return issued, [][]byte{cert.Raw, s.issuer.Cert.Raw}, key, nil
}

// checkRegistration validates a registration request and returns its CSR.
func (s *Server) checkRegistration(req *api.RegisterRequest) (*x509.CertificateRequest, error) {
	if err := ca.ValidateNodeID(req.NodeID); err != nil {
		return nil, badRequest("node_id: %v", err)
	}
	if req.Network != "" && req.Network != s.network {
		return nil, badRequest("this cluster is the root of network %q, not %q", s.network, req.Network)
	}
	if req.Principal != "" && !validPrincipal(req.Principal) {
		return nil, badRequest("principal %q is not one of ADMIN, NODE, NODE_CUSTODIAN, DATA_CUSTODIAN, USER", req.Principal)
	}
	if len(req.DNSNames) > maxDNSNames {
		return nil, badRequest("at most %d DNS names, not %d", maxDNSNames, len(req.DNSNames))
	}
	for _, d := range req.DNSNames {
		if err := s.checkNodeDNSName(req.NodeID, d); err != nil {
			return nil, err
		}
	}
	csr, err := s.checkCSR(req.CSR)
	if err != nil {
		return nil, badRequest("%v", err)
	}
	if n, ok := s.store.Node(req.NodeID); ok {
		switch n.Status {
		case fsm.NodeRevoked:
			return nil, forbidden("node %q is revoked; register under a new node id", req.NodeID)
		case fsm.NodeActive:
			if n.ActiveAt(s.opts.Clock()) {
				return nil, conflict("node %q is already active, with a certificate valid until %s; renew it with `keymesh node renew`, or revoke the node first",
					req.NodeID, n.CertExpiry.UTC().Format(time.RFC3339))
			}
		}
	}
	return csr, nil
}

// checkNodeDNSName refuses a DNS name for node id that is not a lower-case
// host name under the network's domain (localhost, IP addresses and other
// domains are refused), or that another active node or a root server
// holds. Which names a join token allows besides <node-id>.<network>, the
// state machine checks with the token.
func (s *Server) checkNodeDNSName(id, name string) error {
	if err := ca.ValidateNetwork(name); err != nil {
		return badRequest("DNS name %q: %v", name, err)
	}
	if !strings.HasSuffix(name, "."+s.network) {
		return badRequest("DNS name %q is not under the network's domain %s; a node may hold %s.%s and the names its join token allows", name, s.network, id, s.network)
	}
	if holder, ok := s.store.DNSNameHolder(name); ok && holder != id {
		if n, ok := s.store.Node(holder); ok && n.ActiveAt(s.opts.Clock()) && n.Status == fsm.NodeActive {
			return conflict("DNS name %s is held by node %s", name, holder)
		}
	}
	for _, srv := range s.store.Servers() {
		for _, addr := range []string{srv.APIAddr, srv.RaftAddr} {
			if host, _, err := net.SplitHostPort(addr); err == nil && strings.EqualFold(host, name) {
				return conflict("DNS name %s names root server %s", name, srv.Name)
			}
		}
	}
	return nil
}

func newRegistrationID() string {
	b := make([]byte, 12)
	rand.Read(b)
	return registrationTag + hex.EncodeToString(b)
}

func (s *Server) handleRegister(w http.ResponseWriter, r *http.Request) {
	if wait, ok := s.regLimit.allow(r, s.opts.Clock(), s.limitShare()); !ok {
		writeTooMany(w, wait, "registration from "+r.RemoteAddr)
		return
	}
	var req api.RegisterRequest
	if !s.decode(w, r, &req) {
		return
	}
	resp, status, err := s.register(r.Context(), req, sourceOf(r))
	if err != nil {
		s.writeErr(w, err)
		return
	}
	writeJSON(w, status, resp)
}

// register stores a registration: approved at once with a valid node token
// (the certificate is returned only after its issuance is committed),
// pending otherwise.
//
// Without a token the registration is pending: one per node id, and
// within Limits.MaxPendingRegistrations in all and
// Limits.MaxPendingPerSource per client address (source), which the state
// machine enforces cluster-wide.
func (s *Server) register(ctx context.Context, req api.RegisterRequest, source string) (*api.RegistrationResponse, int, error) {
	csr, err := s.checkRegistration(&req)
	if err != nil {
		return nil, 0, err
	}
	reg := fsm.Registration{ID: newRegistrationID(), NodeID: req.NodeID, Network: s.network, Principal: req.Principal,
		CSR: csr.Raw, DNSNames: req.DNSNames, Source: source}
	cmd := fsm.RegistrationCreate{Registration: reg}
	var chain [][]byte
	if req.Token != "" {
		hash := hashToken(req.Token)
		tok, ok, err := s.joinToken(ctx, hash)
		if err != nil {
			return nil, 0, err
		}
		if !ok {
			return nil, 0, &api.APIError{Status: http.StatusForbidden, Code: fsm.ErrorCode(fsm.ErrTokenNotFound),
				Message: "the join token is not known to this cluster; ask an operator for one (`keymesh tokens create`)"}
		}
		switch {
		case req.Principal == "":
			cmd.Registration.Principal = tok.Principal
		case tok.Principal != "" && tok.Principal != req.Principal:
			return nil, 0, &api.APIError{Status: http.StatusForbidden, Code: fsm.ErrorCode(fsm.ErrTokenConstraint),
				Message: fmt.Sprintf("this token grants principal %s, not %s", tok.Principal, req.Principal)}
		}
		if cmd.Registration.Principal == "" {
			cmd.Registration.Principal = fsm.PrincipalNode
		}
		issued, c, key, err := s.signNode(csr.PublicKey, req.NodeID, req.DNSNames)
		if err != nil {
			return nil, 0, err
		}
		cmd.TokenHash, cmd.Cert, cmd.Key, chain = hash, &issued, key, c
	} else {
		if cmd.Registration.Principal == "" {
			cmd.Registration.Principal = fsm.PrincipalNode
		}
		if p, ok := s.store.PendingRegistration(req.NodeID); ok {
			return nil, 0, conflict("registration %s of node %s is already pending; an operator approves or denies it first (`keymesh registrations list --status pending`)", p.ID, req.NodeID)
		}
		l := s.opts.Limits
		cmd.Limits = &fsm.PendingLimits{Total: l.MaxPendingRegistrations, PerSource: l.MaxPendingPerSource}
	}
	idx, err := s.Propose(ctx, fsm.MsgRegistrationCreate, cmd)
	if err != nil {
		return nil, 0, err
	}
	stored, _ := s.store.Registration(reg.ID)
	resp := &api.RegistrationResponse{Registration: registrationInfo(stored), Chain: chain, Index: idx}
	if chain == nil {
		s.log.Info("registration pending", "id", reg.ID, "node", req.NodeID)
		return resp, http.StatusAccepted, nil
	}
	s.log.Info("registered node", "id", reg.ID, "node", req.NodeID, "serial", cmd.Cert.Serial)
	return resp, http.StatusCreated, nil
}

// chainOf returns the committed certificate of an approved registration and
// the issuing intermediate that signed it.
func (s *Server) chainOf(reg fsm.Registration) ([][]byte, error) {
	issued, ok := s.store.Issued(reg.Issuer, reg.Serial)
	if !ok {
		return nil, fmt.Errorf("cluster: registration %s is approved but its certificate is not in the state", reg.ID)
	}
	is, ok := s.store.Issuer(reg.Issuer)
	if !ok {
		return nil, fmt.Errorf("cluster: issuer %q of registration %s is unknown", reg.Issuer, reg.ID)
	}
	return [][]byte{issued.Cert, is.Cert}, nil
}

// handleCollect hands out the certificate of an approved registration to
// whoever proves possession of the registration's key.
func (s *Server) handleCollect(w http.ResponseWriter, r *http.Request) {
	if wait, ok := s.regLimit.allow(r, s.opts.Clock(), s.limitShare()); !ok {
		writeTooMany(w, wait, "collection from "+r.RemoteAddr)
		return
	}
	var req api.CollectRequest
	if !s.decode(w, r, &req) {
		return
	}
	id := r.PathValue("id")
	reg, ok, err := lookupConsistent(r.Context(), s, s.store.Registration, id)
	if err != nil {
		s.writeErr(w, err)
		return
	}
	if !ok {
		writeError(w, http.StatusNotFound, api.CodeNotFound, fmt.Sprintf("no registration %q; register again with `keymesh node join`", id))
		return
	}
	t, err := time.Parse(time.RFC3339, req.Time)
	if err != nil {
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, "time must be RFC 3339")
		return
	}
	if d := s.opts.Clock().Sub(t); d > collectSkew || d < -collectSkew {
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, fmt.Sprintf("the proof's time is %s away from this server's clock; check the node's clock", d.Round(time.Second)))
		return
	}
	csr, err := x509.ParseCertificateRequest(reg.CSR)
	if err != nil {
		s.writeErr(w, fmt.Errorf("cluster: stored CSR of %s: %w", id, err))
		return
	}
	if err := ca.VerifyPossession(csr.PublicKey, req.Signature, possessionCtx, id, req.Time); err != nil {
		writeError(w, http.StatusForbidden, api.CodeForbidden, "the proof of possession does not match the registration's key")
		return
	}
	resp := api.RegistrationResponse{Registration: registrationInfo(reg)}
	switch reg.Status {
	case fsm.RegistrationPending:
		writeJSON(w, http.StatusAccepted, resp)
		return
	case fsm.RegistrationApproved:
		if resp.Chain, err = s.chainOf(reg); err != nil {
			s.writeErr(w, err)
			return
		}
	}
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) handleListRegistrations(w http.ResponseWriter, r *http.Request) {
	if !s.maybeConsistent(w, r) {
		return
	}
	status := r.URL.Query().Get("status")
	out := []api.RegistrationInfo{}
	for _, reg := range s.store.Registrations() {
		if status == "" || reg.Status == status {
			out = append(out, registrationInfo(reg))
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) pendingRegistration(ctx context.Context, id string) (fsm.Registration, error) {
	reg, ok, err := lookupConsistent(ctx, s, s.store.Registration, id)
	if err != nil {
		return reg, err
	}
	if !ok {
		return reg, &api.APIError{Status: http.StatusNotFound, Code: api.CodeNotFound,
			Message: fmt.Sprintf("no registration %q; `keymesh registrations list` shows them", id)}
	}
	if reg.Status != fsm.RegistrationPending {
		return reg, conflict("registration %s is %s, not pending", id, reg.Status)
	}
	return reg, nil
}

func (s *Server) handleApprove(w http.ResponseWriter, r *http.Request, c caller) {
	var req api.ApproveRequest
	if !s.decode(w, r, &req) {
		return
	}
	if req.Principal != "" && !validPrincipal(req.Principal) {
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, fmt.Sprintf("principal %q is not one of ADMIN, NODE, NODE_CUSTODIAN, DATA_CUSTODIAN, USER", req.Principal))
		return
	}
	reg, err := s.pendingRegistration(r.Context(), r.PathValue("id"))
	if err != nil {
		s.writeErr(w, err)
		return
	}
	principal := reg.Principal
	if req.Principal != "" {
		principal = req.Principal
	}
	ctx := c.ctx
	ctx.Grant = &policy.Grant{Principal: identity.Principal(principal)}
	if !s.allow(w, c, policy.RegistrationApprove, ctx) || !s.mayGrant(w, c, identity.Principal(principal)) {
		return
	}
	csr, err := s.checkCSR(reg.CSR)
	if err != nil {
		s.writeErr(w, badRequest("%v", err))
		return
	}
	issued, chain, key, err := s.signNode(csr.PublicKey, reg.NodeID, reg.DNSNames)
	if err != nil {
		s.writeErr(w, err)
		return
	}
	cmd := fsm.RegistrationApprove{ID: reg.ID, Cert: issued, Key: key}
	if principal != reg.Principal {
		cmd.Principal = principal
	}
	idx, err := s.Propose(r.Context(), fsm.MsgRegistrationApprove, cmd)
	if err != nil {
		s.writeErr(w, err)
		return
	}
	stored, _ := s.store.Registration(reg.ID)
	s.log.Info("approved registration", "id", reg.ID, "node", reg.NodeID, "principal", principal, "serial", issued.Serial, "by", c.ctx.Subject)
	writeJSON(w, http.StatusOK, api.RegistrationResponse{Registration: registrationInfo(stored), Chain: chain, Index: idx})
}

func (s *Server) handleDeny(w http.ResponseWriter, r *http.Request) {
	var req api.DenyRequest
	if !s.decode(w, r, &req) {
		return
	}
	reg, err := s.pendingRegistration(r.Context(), r.PathValue("id"))
	if err != nil {
		s.writeErr(w, err)
		return
	}
	idx, err := s.Propose(r.Context(), fsm.MsgRegistrationDeny, fsm.RegistrationDeny{ID: reg.ID, Reason: req.Reason})
	if err != nil {
		s.writeErr(w, err)
		return
	}
	stored, _ := s.store.Registration(reg.ID)
	writeJSON(w, http.StatusOK, api.RegistrationResponse{Registration: registrationInfo(stored), Index: idx})
}

// handleRenew signs a new certificate for the node that presents its
// current one over mutual TLS, or its previous one: a node whose renewal
// answer was lost still holds the previous certificate and retries with it
// (fsm.NodeCertRenew keeps it the previous one). The old certificate stays
// valid until it expires; a revoked node cannot renew.
func (s *Server) handleRenew(w http.ResponseWriter, r *http.Request, c caller) {
	if c.kind != ca.KindNode {
		writeError(w, http.StatusForbidden, api.CodeForbidden, "only nodes renew their certificates here; present the node certificate")
		return
	}
	var req api.RenewRequest
	if !s.decode(w, r, &req) {
		return
	}
	n, ok := s.store.Node(c.name)
	switch {
	case !ok:
		writeError(w, http.StatusForbidden, api.CodeForbidden, fmt.Sprintf("node %q is not registered", c.name))
		return
	case n.Status != fsm.NodeActive:
		writeError(w, http.StatusForbidden, api.CodeNodeRevoked, fmt.Sprintf("node %q is %s and cannot renew; register it again under a new id", c.name, n.Status))
		return
	}
	presented := r.TLS.VerifiedChains[0][0]
	serial := fsm.FormatSerial(presented.SerialNumber)
	if serial != n.CertSerial && serial != n.PrevSerial {
		writeError(w, http.StatusForbidden, api.CodeForbidden, "this certificate is neither the node's current nor its previous one; renew with the newest, or register the node again")
		return
	}
	csr, err := s.checkCSR(req.CSR)
	if err != nil {
		s.writeErr(w, badRequest("%v", err))
		return
	}
	if kid, err := identity.Thumbprint(csr.PublicKey); err == nil {
		if _, revoked := s.store.Revoked(fsm.RevocationKey, kid); revoked {
			writeError(w, http.StatusForbidden, api.CodeKeyRevoked, fmt.Sprintf("the key of this request (%s) is revoked; make a new key with `keymesh node rotate-key`", kid))
			return
		}
	}
	issued, chain, key, err := s.signNode(csr.PublicKey, c.name, presented.DNSNames)
	if err != nil {
		s.writeErr(w, err)
		return
	}
	idx, err := s.Propose(r.Context(), fsm.MsgNodeCertRenew, fsm.NodeCertRenew{Cert: issued, Key: key, Presented: serial})
	if err != nil {
		s.writeErr(w, err)
		return
	}
	s.log.Info("renewed node certificate", "node", c.name, "serial", issued.Serial)
	resp := api.CertResponse{Chain: chain, Index: idx}
	if kr, err := s.gossipKeyring(true); err == nil {
		resp.Gossip = &kr
	}
	writeJSON(w, http.StatusOK, resp)
}

// crl returns this server's CRL (DER) for the state as it is now. The CRL
// builder keeps one ready; a request that finds it behind a change of
// the revocations, nodes or issued certificates builds it itself, so a
// revocation is in the CRL served right after it was acknowledged.
func (s *Server) crl() ([]byte, error) {
	s.crlMu.Lock()
	defer s.crlMu.Unlock()
	now := s.opts.Clock()
	if s.crlDER != nil && now.Before(s.crlRefresh) {
		if s.crlSeen == s.store.Index() {
			return s.crlDER, nil
		}
		if ch := s.store.Changes(s.crlSeen); !s.crlChanged(ch) {
			s.crlSeen = ch.Index
			return s.crlDER, nil
		}
	}
	var (
		entries []x509.RevocationListEntry
		idx     uint64
	)
	s.store.Read(func(rd fsm.Reader) {
		idx = rd.Index()
		add := func(serial string, at time.Time) {
			if _, ok := rd.Issued(s.name, serial); !ok {
				return
			}
			if n, ok := parseSerialBig(serial); ok {
				entries = append(entries, x509.RevocationListEntry{SerialNumber: n, RevocationTime: at})
			}
		}
		for _, rev := range rd.RevocationsOf(fsm.RevocationCert, fsm.RevocationNode) {
			switch rev.Kind {
			case fsm.RevocationCert:
				add(rev.ID, rev.Time)
			case fsm.RevocationNode:
				if n, ok := rd.Node(rev.ID); ok {
					for _, serial := range []string{n.CertSerial, n.PrevSerial} {
						if serial != "" {
							add(serial, rev.Time)
						}
					}
				}
			}
		}
	})
	der, err := ca.CreateCRL(s.issuer, entries, bigUint(idx), now, now.Add(crlValidity), nil)
	if err != nil {
		return nil, err
	}
	s.crlDER, s.crlSeen, s.crlRefresh = der, idx, now.Add(crlValidity/2)
	s.metrics.crlBuilds.Inc()
	return der, nil
}

// crlChanged reports whether changes may change what this server's CRL
// lists: the revocation of a certificate or a node, a certificate of this
// issuer dropped, or issued or a node record changed while revoked. Token
// and key revocations and the certificates of registrations change nothing,
// so a load of them builds no CRL (a build reads every certificate and node
// revocation and signs).
func (s *Server) crlChanged(ch fsm.Changes) bool {
	if ch.Reset {
		return true
	}
	prefix := s.name + "/"
	for _, t := range ch.Tables {
		switch t.Table {
		case fsm.TableRevocations:
			for _, keys := range [][]string{t.Put, t.Deleted} {
				for _, k := range keys {
					if strings.HasPrefix(k, string(fsm.RevocationCert)+":") || strings.HasPrefix(k, string(fsm.RevocationNode)+":") {
						return true
					}
				}
			}
		case fsm.TableIssued:
			for _, k := range t.Deleted {
				if strings.HasPrefix(k, prefix) {
					return true
				}
			}
			for _, k := range t.Put {
				if serial, ok := strings.CutPrefix(k, prefix); ok {
					if _, revoked := s.store.Revoked(fsm.RevocationCert, serial); revoked {
						return true
					}
				}
			}
		case fsm.TableNodes:
			if len(t.Deleted) > 0 {
				return true
			}
			for _, id := range t.Put {
				if _, revoked := s.store.Revoked(fsm.RevocationNode, id); revoked {
					return true
				}
			}
		}
	}
	return false
}

// buildCRLs keeps this server's CRL built: after every applied change that
// touches it (many changes in a burst make one build) and before its
// nextUpdate comes near.
func (s *Server) buildCRLs(ctx context.Context) error {
	var seen uint64
	for {
		if _, err := s.crl(); err != nil {
			s.log.Warn("building the CRL failed; requests will try again", "error", err)
		}
		wctx, cancel := context.WithTimeout(ctx, crlValidity/4)
		idx, err := s.store.WaitIndex(wctx, seen)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		if err == nil {
			seen = idx
		}
	}
}

// crlValidity is how far ahead a CRL's nextUpdate lies.
const crlValidity = time.Hour

func (s *Server) handleCRL(w http.ResponseWriter, r *http.Request) {
	issuer := r.PathValue("issuer")
	if issuer != "" && issuer != s.name {
		rec, ok := s.store.Server(issuer)
		if !ok {
			writeError(w, http.StatusNotFound, api.CodeNotFound, fmt.Sprintf("no root server %q; each issuer serves its own CRL", issuer))
			return
		}
		w.Header().Set("Location", "https://"+rec.APIAddr+"/v1/ca/crl")
		writeError(w, http.StatusTemporaryRedirect, api.CodeRedirect, fmt.Sprintf("the CRL of issuer %s is served by %s", issuer, rec.APIAddr))
		return
	}
	der, err := s.crl()
	if err != nil {
		s.writeErr(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/pkix-crl")
	w.Header().Set("Cache-Control", "max-age=5")
	w.Write(der)
}

// parseSerialBig parses a canonical serial.
func parseSerialBig(s string) (*big.Int, bool) {
	return new(big.Int).SetString(s, 16)
}

func bigUint(n uint64) *big.Int { return new(big.Int).SetUint64(n) }

// validPrincipal reports whether p is one of the five principals.
func validPrincipal(p string) bool {
	switch p {
	case fsm.PrincipalAdmin, fsm.PrincipalNode, fsm.PrincipalNodeCustodian, fsm.PrincipalDataCustodian, fsm.PrincipalUser:
		return true
	}
	return false
}

// lookupConsistent looks key up in the local replica and, when it is not
// there, once more after catching up with the leader: a record committed
// through another server a moment ago is found. When the cluster cannot
// say (no leader during an election) it returns that error, never "not
// found".
func lookupConsistent[V any](ctx context.Context, s *Server, get func(string) (V, bool), key string) (V, bool, error) {
	if v, ok := get(key); ok {
		return v, true, nil
	}
	if err := s.ConsistentRead(ctx); err != nil {
		var zero V
		return zero, false, err
	}
	v, ok := get(key)
	return v, ok, nil
}

// joinToken finds a join token by the hash of its secret.
func (s *Server) joinToken(ctx context.Context, hash string) (fsm.JoinToken, bool, error) {
	return lookupConsistent(ctx, s, s.store.JoinToken, hash)
}

// checkCSR is ca.CheckCSR, counted: a request's CSR signature is checked
// once, by the server that received it (the state machine takes the CSR as
// DER and does not check it again on any replica).
func (s *Server) checkCSR(der []byte) (*x509.CertificateRequest, error) {
	s.metrics.csrChecks.Inc()
	return ca.CheckCSR(der)
}
