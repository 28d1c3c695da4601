package cluster

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/keymesh/keymesh/ca"
	"github.com/keymesh/keymesh/cluster/api"
	"github.com/keymesh/keymesh/fsm"
)

// Seal key rotation. Every root server holds the network's seal key in
// seal.key; the AS root key is in the replicated state only sealed under
// it. When a root server is removed, the leader makes a new seal key,
// hands it to every remaining member (each keeps it in seal.key.next),
// and, once a majority of the voters hold it, proposes the AS root key
// sealed under it (fsm.CAUpdate). A server that sees the new sealed key
// promotes the next key to seal.key; one that was down asks a member for
// the key that opens the sealed root. The removed server cannot: internal
// calls are for current members, and its certificates are revoked.
//
// What this does not undo: the removed server held the old seal key and
// the old sealed root, so it could open the AS root key. Only a rotation
// of the AS root takes that away (see docs/architecture.md, threat model).

// fileSealNext holds a seal key handed out but not yet in force.
const fileSealNext = "seal.key.next"

// sealKeyRequest is the body of POST /v1/internal/seal-key (the leader
// hands out the next key) and the answer of POST /v1/internal/seal-key/get
// (a member asks for the key in force).
type sealKeyRequest struct {
	Key []byte `json:"key"`
}

// currentSealKey is the seal key this server holds now.
func (s *Server) currentSealKey() []byte {
	s.sealMu.Lock()
	defer s.sealMu.Unlock()
	return s.sealKey
}

// openRoot unseals the AS root key of rec with the seal key in force,
// promoting the next key, or fetching the key from a member, when the one
// held no longer opens it (a rotation happened).
func (s *Server) openRoot(ctx context.Context, rec fsm.CA) (ca.Signer, error) {
	cert, err := x509.ParseCertificate(rec.Active)
	if err != nil {
		return ca.Signer{}, fmt.Errorf("cluster: AS root certificate: %w", err)
	}
	key, err := s.unseal(ctx, rec.SealedKey)
	if err != nil {
		return ca.Signer{}, err
	}
	return ca.Signer{Cert: cert, Key: key}, nil
}

// unseal opens sealed with the seal key in force, then the next key, then
// a key fetched from another member, keeping whichever opens it.
func (s *Server) unseal(ctx context.Context, sealed []byte) (crypto.Signer, error) {
	s.sealMu.Lock()
	cur, next := s.sealKey, s.sealNext
	s.sealMu.Unlock()
	if k, err := ca.OpenSigner(cur, sealed, s.network); err == nil {
		return k, nil
	}
	if next != nil {
		if k, err := ca.OpenSigner(next, sealed, s.network); err == nil {
			return k, s.adoptSealKey(next)
		}
	}
	fetched, err := s.fetchSealKey(ctx, sealed)
	if err != nil {
		return nil, fmt.Errorf("cluster: unseal the AS root key: this server's seal key does not open it and no member handed out one that does (%w); is seal.key of this server the network's?", err)
	}
	k, err := ca.OpenSigner(fetched, sealed, s.network)
	if err != nil {
		return nil, err
	}
	return k, s.adoptSealKey(fetched)
}

// adoptSealKey makes key the seal key in force, on disk first.
func (s *Server) adoptSealKey(key []byte) error {
	s.sealMu.Lock()
	defer s.sealMu.Unlock()
	if err := ca.WriteSealKeyFile(s.dir.path(fileSealKey), key); err != nil {
		return fmt.Errorf("cluster: store the new seal key: %w", err)
	}
	os.Remove(s.dir.path(fileSealNext))
	s.sealKey, s.sealNext = key, nil
	s.log.Info("seal key rotated: the new key is in force")
	return nil
}

// fetchSealKey asks the other members, one after the other, for the seal
// key that opens sealed.
func (s *Server) fetchSealKey(ctx context.Context, sealed []byte) ([]byte, error) {
	err := errors.New("no other member")
	for _, srv := range s.store.Servers() {
		if srv.Name == s.name || srv.Status == fsm.ServerRemoved || srv.APIAddr == "" {
			continue
		}
		var resp sealKeyRequest
		callCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		cerr := s.memberCall(callCtx, srv.APIAddr, "/v1/internal/seal-key/get", struct{}{}, &resp)
		cancel()
		if cerr != nil {
			err = cerr
			continue
		}
		if _, oerr := ca.OpenSigner(resp.Key, sealed, s.network); oerr != nil {
			err = fmt.Errorf("%s: its seal key does not open the sealed root either", srv.Name)
			continue
		}
		return resp.Key, nil
	}
	return nil, err
}

// handleInternalSealKey keeps the next seal key the leader hands out, in
// seal.key.next, until the sealed root under it is committed.
func (s *Server) handleInternalSealKey(w http.ResponseWriter, r *http.Request) {
	var req sealKeyRequest
	if !s.decode(w, r, &req) {
		return
	}
	if len(req.Key) != 32 {
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, "a seal key is 32 bytes")
		return
	}
	s.sealMu.Lock()
	defer s.sealMu.Unlock()
	if err := ca.WriteSealKeyFile(s.dir.path(fileSealNext), req.Key); err != nil {
		s.writeErr(w, err)
		return
	}
	s.sealNext = req.Key
	writeJSON(w, http.StatusOK, struct{}{})
}

// handleInternalGetSealKey hands the seal key in force to a member that
// cannot open the sealed root (it was down during a rotation).
func (s *Server) handleInternalGetSealKey(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, sealKeyRequest{Key: s.currentSealKey()})
}

// rotateSealKey runs on the leader after a root server was removed: a new
// seal key for the remaining members, then the AS root key sealed under
// it. It is safe to run again after a failure: until the new sealed key
// is committed, the old key stays in force everywhere.
func (s *Server) rotateSealKey(ctx context.Context) error {
	s.caMu.Lock()
	defer s.caMu.Unlock()
	rec, ok := s.store.CA(s.network)
	if !ok {
		return errors.New("cluster: no CA in the state")
	}
	root, err := s.openRoot(ctx, rec)
	if err != nil {
		return err
	}
	next, err := ca.NewSealKey(nil)
	if err != nil {
		return err
	}
	sealed, err := ca.SealSigner(next, root.Key, s.network, nil)
	if err != nil {
		return err
	}
	// The next key goes to every member before the state depends on it:
	// a majority of the voters must hold it, so that losing any minority
	// loses no key that opens the root.
	voters, holders := 0, 0
	for _, srv := range s.store.Servers() {
		if srv.Status != fsm.ServerVoter {
			continue
		}
		voters++
		if srv.Name == s.name {
			s.sealMu.Lock()
			err := ca.WriteSealKeyFile(s.dir.path(fileSealNext), next)
			if err == nil {
				s.sealNext = next
			}
			s.sealMu.Unlock()
			if err != nil {
				return fmt.Errorf("cluster: store the next seal key: %w", err)
			}
			holders++
			continue
		}
		callCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := s.memberCall(callCtx, srv.APIAddr, "/v1/internal/seal-key", sealKeyRequest{Key: next}, &struct{}{})
		cancel()
		if err != nil {
			s.log.Warn("could not hand the next seal key to a member; it fetches it later", "server", srv.Name, "error", err)
			continue
		}
		holders++
	}
	if holders*2 <= voters {
		return fmt.Errorf("cluster: only %d of %d voters took the next seal key; the old one stays in force; retry `keymesh root rotate-seal`", holders, voters)
	}
	update := rec
	update.SealedKey = sealed
	if update.GossipKeys, err = s.resealGossipKeys(rec, next); err != nil {
		return err
	}
	if _, err := s.Propose(ctx, fsm.MsgCAUpdate, fsm.CAUpdate{CA: update, ExpectModifyIndex: rec.ModifyIndex}); err != nil {
		return fmt.Errorf("cluster: commit the AS root key sealed under the new seal key: %w", err)
	}
	if err := s.adoptSealKey(next); err != nil {
		return err
	}
	s.log.Info("sealed the AS root key under a new seal key", "holders", holders, "voters", voters)
	return nil
}

// followSealKey runs on every server when the CA record changes: a new
// sealed root opens with the next key (promoted) or one fetched from a
// member.
func (s *Server) followSealKey(ctx context.Context) {
	rec, ok := s.store.CA(s.network)
	if !ok {
		return
	}
	// While a restarted server replays its log the record may be an old
	// one; signing opens the current record again (openRoot), so a
	// failure here is only noted.
	if _, err := s.unseal(ctx, rec.SealedKey); err != nil {
		s.log.Debug("the sealed AS root key does not open with this server's seal keys yet", "error", err)
	}
}

// handleRotateSeal seals the AS root key under a new seal key (`keymesh
// root rotate-seal`), on the leader.
func (s *Server) handleRotateSeal(w http.ResponseWriter, r *http.Request) {
	err := s.onLeader(r.Context(), "/v1/internal/rotate-seal", struct{}{}, &struct{}{}, s.rotateSealKey)
	if err != nil {
		s.writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"rotated": true, "index": s.store.Index()})
}

func (s *Server) handleInternalRotateSeal(w http.ResponseWriter, r *http.Request) {
	if err := s.rotateSealKey(r.Context()); err != nil {
		s.writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, struct{}{})
}
