package cluster

import (
	"context"
	"crypto/subtle"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/hashicorp/raft"

	"github.com/keymesh/keymesh/ca"
	"github.com/keymesh/keymesh/cluster/api"
	"github.com/keymesh/keymesh/fsm"
)

func (s *Server) handleJoin(w http.ResponseWriter, r *http.Request) {
	if wait, ok := s.regLimit.allow(r, s.opts.Clock(), s.limitShare()); !ok {
		writeTooMany(w, wait, "root join from "+r.RemoteAddr)
		return
	}
	var req api.JoinRequest
	if !s.decode(w, r, &req) {
		return
	}
	resp, err := s.admit(r.Context(), req)
	if err != nil {
		s.writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

func badRequest(format string, args ...any) error {
	return &api.APIError{Status: http.StatusBadRequest, Code: api.CodeBadRequest, Message: fmt.Sprintf(format, args...)}
}

// admit checks a join request, signs the new server's issuing intermediate
// with the AS root, spends the token and records the server as joining.
// Everything is checked and signed before the first command is proposed.
func (s *Server) admit(ctx context.Context, req api.JoinRequest) (*api.JoinResponse, error) {
	if err := ca.ValidateName(req.Name); err != nil {
		return nil, badRequest("name: %v", err)
	}
	if err := validateAddr("raft_addr", req.RaftAddr); err != nil {
		return nil, badRequest("%v", err)
	}
	if err := validateAddr("api_addr", req.APIAddr); err != nil {
		return nil, badRequest("%v", err)
	}
	pub, err := x509.ParsePKIXPublicKey(req.IssuerKey)
	if err != nil {
		return nil, badRequest("issuer_key is not a PKIX public key: %v", err)
	}
	hash := hashToken(req.Token)
	tok, ok, err := s.joinToken(ctx, hash)
	if err != nil {
		return nil, err
	}
	if !ok || subtle.ConstantTimeCompare([]byte(tok.Hash), []byte(hash)) != 1 {
		return nil, &api.APIError{Status: http.StatusForbidden, Code: fsm.ErrorCode(fsm.ErrTokenNotFound),
			Message: "the join token is not known to this cluster; make one with `keymesh root token` on a running server"}
	}
	if tok.Kind != "root" {
		return nil, &api.APIError{Status: http.StatusForbidden, Code: fsm.ErrorCode(fsm.ErrTokenConstraint),
			Message: "this is a node join token; root servers join with a token from `keymesh root token`"}
	}
	for _, srv := range s.store.Servers() {
		if srv.Name == req.Name && srv.Status != "removed" {
			return nil, &api.APIError{Status: http.StatusConflict, Code: api.CodeConflict,
				Message: fmt.Sprintf("a root server named %q is already a member; pick another name or remove it with `keymesh root remove %s`", req.Name, req.Name)}
		}
		if srv.RaftAddr == req.RaftAddr && srv.Status != "removed" {
			return nil, &api.APIError{Status: http.StatusConflict, Code: api.CodeConflict,
				Message: fmt.Sprintf("raft address %s is already used by root server %q", req.RaftAddr, srv.Name)}
		}
	}
	rec, ok := s.store.CA(s.network)
	if !ok {
		return nil, errors.New("cluster: the replicated state holds no CA for this network yet")
	}
	root, err := s.rootSigner(ctx, rec)
	if err != nil {
		return nil, err
	}
	intermediate, err := ca.SignIntermediate(root, pub, s.network, req.Name, s.opts.Clock(), nil)
	if err != nil {
		return nil, badRequest("cannot sign an issuing certificate for this key: %v", err)
	}
	// The token use is the commit point: a concurrent second join with the
	// same one-time token fails here.
	if _, err := s.Propose(ctx, fsm.MsgJoinTokenConsume, fsm.JoinTokenConsume{Hash: hash, Kind: "root", NodeID: req.Name}); err != nil {
		return nil, err
	}
	if _, err := s.Propose(ctx, fsm.MsgIssuerPut, fsm.IssuerPut{Issuer: fsm.Issuer{
		ID: req.Name, Network: s.network, Cert: intermediate.Raw, Status: "active"}}); err != nil {
		return nil, err
	}
	if _, err := s.Propose(ctx, fsm.MsgServerPut, fsm.ServerPut{Server: fsm.Server{
		Name: req.Name, RaftAddr: req.RaftAddr, APIAddr: req.APIAddr, Status: "joining"}}); err != nil {
		return nil, err
	}
	s.log.Info("admitted root server", "name", req.Name, "raft_addr", req.RaftAddr, "api_addr", req.APIAddr)
	resp := &api.JoinResponse{Network: s.network, Roots: [][]byte{rec.Active}, IssuerCert: intermediate.Raw, SealedRoot: rec.SealedKey}
	if req.WantSealKey {
		resp.SealKey = s.currentSealKey()
	}
	return resp, nil
}

// rootSigner unseals the AS root key from the replicated state. The key
// exists unsealed only in this server's memory, and only while it signs.
func (s *Server) rootSigner(ctx context.Context, rec fsm.CA) (ca.Signer, error) {
	return s.openRoot(ctx, rec)
}

// addVoter runs on the leader: it adds a server admitted by a join as a
// voter and marks its record.
func (s *Server) addVoter(ctx context.Context, name, raftAddr string) error {
	rec, ok := s.store.Server(name)
	if !ok || rec.Status == "removed" {
		return &api.APIError{Status: http.StatusForbidden, Code: api.CodeForbidden,
			Message: fmt.Sprintf("root server %q was not admitted; join it with a root-join token first", name)}
	}
	if rec.RaftAddr != raftAddr {
		return badRequest("root server %q was admitted with raft address %s, not %s", name, rec.RaftAddr, raftAddr)
	}
	if err := s.node.raft.AddVoter(raft.ServerID(name), raft.ServerAddress(raftAddr), 0, timeLeft(ctx, s.opts.Limits.RequestTimeout)).Error(); err != nil {
		return err
	}
	if rec.Status != "voter" {
		rec.Status = "voter"
		if _, err := s.Propose(ctx, fsm.MsgServerPut, fsm.ServerPut{Server: rec}); err != nil {
			return err
		}
	}
	s.log.Info("added voter", "name", name, "raft_addr", raftAddr)
	return nil
}

// removeServer runs on the leader: it revokes the server's issuing
// intermediate (every certificate under it, node certificates and the
// server's own TLS and admin certificates, stops at once), removes the
// server from the Raft configuration and its record from the state, and
// seals the AS root key under a new seal key for the remaining members.
// Run again after a failure, it finishes what is left.
func (s *Server) removeServer(ctx context.Context, name string) error {
	if name == s.name {
		return &api.APIError{Status: http.StatusConflict, Code: api.CodeConflict,
			Message: fmt.Sprintf("root server %q leads the cluster; stop it (another server takes over) and remove it through another server", name)}
	}
	f := s.node.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return err
	}
	inRaft := false
	for _, srv := range f.Configuration().Servers {
		inRaft = inRaft || string(srv.ID) == name
	}
	_, inState := s.store.Server(name)
	is, hasIssuer := s.store.Issuer(name)
	if !inRaft && !inState && (!hasIssuer || is.Status == fsm.IssuerRevoked) {
		return &api.APIError{Status: http.StatusNotFound, Code: api.CodeNotFound,
			Message: fmt.Sprintf("no root server named %q; `keymesh root status` lists them", name)}
	}
	if hasIssuer {
		if err := s.revokeIssuer(ctx, is); err != nil {
			return err
		}
	}
	if inRaft {
		if err := s.node.raft.RemoveServer(raft.ServerID(name), 0, timeLeft(ctx, s.opts.Limits.RequestTimeout)).Error(); err != nil {
			return err
		}
	}
	if inState {
		if _, err := s.Propose(ctx, fsm.MsgServerRemove, fsm.ServerRemove{Name: name}); err != nil && !errors.Is(err, fsm.ErrNotFound) {
			return err
		}
	}
	s.log.Info("removed root server; its issuing certificate is revoked", "name", name)
	if err := s.rotateSealKey(ctx); err != nil {
		return fmt.Errorf("cluster: %s is removed, but the seal key was not rotated: %w", name, err)
	}
	return nil
}

// revokeIssuer revokes a root server's issuing intermediate by its serial
// (kept until it would have expired) and marks the issuer revoked.
func (s *Server) revokeIssuer(ctx context.Context, is fsm.Issuer) error {
	cert, err := x509.ParseCertificate(is.Cert)
	if err != nil {
		return fmt.Errorf("cluster: issuing certificate of %s: %w", is.ID, err)
	}
	rev := fsm.Revocation{Kind: fsm.RevocationCert, ID: fsm.FormatSerial(cert.SerialNumber),
		Reason: "root server " + is.ID + " removed", PruneAfter: cert.NotAfter.UTC()}
	if _, err := s.Propose(ctx, fsm.MsgRevoke, fsm.Revoke{Revocation: rev}); err != nil && !errors.Is(err, fsm.ErrExists) {
		return fmt.Errorf("cluster: revoke the issuing certificate of %s: %w", is.ID, err)
	}
	if is.Status != fsm.IssuerRevoked {
		is.Status = fsm.IssuerRevoked
		if _, err := s.Propose(ctx, fsm.MsgIssuerPut, fsm.IssuerPut{Issuer: is}); err != nil {
			return fmt.Errorf("cluster: mark the issuer of %s revoked: %w", is.ID, err)
		}
	}
	return nil
}

func timeLeft(ctx context.Context, def time.Duration) time.Duration {
	if dl, ok := ctx.Deadline(); ok {
		return time.Until(dl)
	}
	return def
}
