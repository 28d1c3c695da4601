package cluster

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"

	"github.com/keymesh/keymesh/ca"
	"github.com/keymesh/keymesh/cluster/api"
	"github.com/keymesh/keymesh/fsm"
	"github.com/keymesh/keymesh/identity/policy"
)

// Federation: the trust anchors of other networks and this network's
// access list (the networks whose members its nodes accept; its own
// always). Adding a federated network puts its anchor first and accepts
// it after; removing un-accepts it first and drops the anchor after: no
// state in between accepts a network without its anchor.

// anchorInfo describes an anchor for listing.
func (s *Server) anchorInfo(a fsm.TrustAnchor, accept []string) api.AnchorInfo {
	info := api.AnchorInfo{Network: a.Network, Own: a.Network == s.network, Index: a.ModifyIndex,
		Accepted: a.Network == s.network || slices.Contains(accept, a.Network), Endpoints: a.Endpoints, Keys: len(a.Keys)}
	for _, der := range a.Roots {
		r := api.AnchorRoot{DER: der}
		if c, err := x509.ParseCertificate(der); err == nil {
			r.Subject, r.CAHash, r.NotAfter = c.Subject.CommonName, ca.Hash(c), c.NotAfter.UTC()
		}
		info.Roots = append(info.Roots, r)
	}
	return info
}

func (s *Server) handleListAnchors(w http.ResponseWriter, r *http.Request) {
	if !s.maybeConsistent(w, r) {
		return
	}
	own, _ := s.store.TrustAnchor(s.network)
	out := []api.AnchorInfo{}
	for _, a := range s.store.TrustAnchors() {
		out = append(out, s.anchorInfo(a, own.Accept))
	}
	writeJSON(w, http.StatusOK, out)
}

// anchorTarget decides trust.write for the anchor of network.
func (s *Server) anchorTarget(w http.ResponseWriter, c caller, network string) bool {
	ctx := c.ctx
	ctx.Anchor = &policy.AnchorTarget{Network: network, Own: network == s.network}
	if !s.allow(w, c, policy.TrustWrite, ctx) {
		return false
	}
	if network == s.network {
		writeError(w, http.StatusConflict, api.CodeConflict, fmt.Sprintf("%s is this cluster's own network: its anchor is its AS root, which changes by a root rotation", network))
		return false
	}
	return true
}

// handlePutAnchor adds or replaces a federated network's anchor and
// accepts its members.
func (s *Server) handlePutAnchor(w http.ResponseWriter, r *http.Request, c caller) {
	network := r.PathValue("id")
	if err := ca.ValidateNetwork(network); err != nil {
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, err.Error())
		return
	}
	if !s.anchorTarget(w, c, network) {
		return
	}
	var req api.AnchorRequest
	if !s.decode(w, r, &req) {
		return
	}
	roots, err := ca.ParseCertsPEM([]byte(req.RootsPEM))
	if err != nil {
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, "roots_pem: "+err.Error())
		return
	}
	if err := ca.CheckAnchor(roots, network, s.opts.Clock()); err != nil {
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, err.Error()+"; give the AS root certificate of that network (its ca.pem)")
		return
	}
	if len(req.Endpoints) > fsm.MaxEndpoints {
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, fmt.Sprintf("endpoints: %d, at most %d", len(req.Endpoints), fsm.MaxEndpoints))
		return
	}
	for i, ep := range req.Endpoints {
		if _, _, err := net.SplitHostPort(ep); err != nil || len(ep) > fsm.MaxIDLen {
			writeError(w, http.StatusBadRequest, api.CodeBadRequest, fmt.Sprintf("endpoint %q is not host:port of a root server of %s", ep, network))
			return
		}
		if slices.Contains(req.Endpoints[:i], ep) {
			writeError(w, http.StatusBadRequest, api.CodeBadRequest, fmt.Sprintf("endpoint %s is given twice", ep))
			return
		}
	}
	anchor := fsm.TrustAnchor{Network: network, Endpoints: req.Endpoints}
	for _, c := range roots {
		anchor.Roots = append(anchor.Roots, c.Raw)
	}
	if _, err := s.casRetry(r.Context(), func() (fsm.MsgType, any, bool) {
		cur, ok := s.store.TrustAnchor(network)
		expect := cur.ModifyIndex
		if !ok {
			expect = 0
		}
		next := anchor
		next.Accept = cur.Accept
		// The keys fetched stay while the roots are the same (they were
		// checked against them); new roots wait for the next fetch.
		if ok && slices.EqualFunc(cur.Roots, anchor.Roots, bytes.Equal) {
			next.Keys = cur.Keys
		}
		return fsm.MsgTrustAnchorPut, fsm.TrustAnchorPut{Anchor: next, ExpectModifyIndex: &expect}, true
	}); err != nil {
		s.writeErr(w, err)
		return
	}
	idx, err := s.changeAccept(r, network, true)
	if err != nil && !errors.Is(err, errNothingTo) {
		s.writeErr(w, err)
		return
	}
	a, _ := s.store.TrustAnchor(network)
	own, _ := s.store.TrustAnchor(s.network)
	info := s.anchorInfo(a, own.Accept)
	s.log.Info("federated network anchored and accepted", "network", network, "roots", len(roots), "by", c.ctx.Subject)
	writeJSON(w, http.StatusOK, api.AnchorResponse{Anchor: &info, Index: max(idx, a.ModifyIndex)})
}

// handleDeleteAnchor stops accepting a federated network and drops its
// anchor.
func (s *Server) handleDeleteAnchor(w http.ResponseWriter, r *http.Request, c caller) {
	network := r.PathValue("id")
	if err := ca.ValidateNetwork(network); err != nil {
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, err.Error())
		return
	}
	if !s.anchorTarget(w, c, network) {
		return
	}
	_, known := s.store.TrustAnchor(network)
	idx, err := s.changeAccept(r, network, false)
	switch {
	case errors.Is(err, errNothingTo) && !known:
		writeError(w, http.StatusNotFound, api.CodeNotFound, fmt.Sprintf("network %s has no trust anchor here; `keymesh trust list` shows them", network))
		return
	case err != nil && !errors.Is(err, errNothingTo):
		s.writeErr(w, err)
		return
	}
	if known {
		i, err := s.Propose(r.Context(), fsm.MsgTrustAnchorDelete, fsm.TrustAnchorDelete{Network: network})
		if err != nil && !errors.Is(err, fsm.ErrNotFound) {
			s.writeErr(w, err)
			return
		}
		idx = max(idx, i)
	}
	s.log.Info("federated network removed", "network", network, "by", c.ctx.Subject)
	writeJSON(w, http.StatusOK, api.AnchorResponse{Removed: true, Index: idx})
}

// changeAccept adds network to, or removes it from, the access list of
// this cluster's own anchor.
func (s *Server) changeAccept(r *http.Request, network string, accept bool) (uint64, error) {
	return s.casRetry(r.Context(), func() (fsm.MsgType, any, bool) {
		own, ok := s.store.TrustAnchor(s.network)
		if !ok {
			return 0, nil, false
		}
		has := slices.Contains(own.Accept, network)
		if has == accept {
			return 0, nil, false
		}
		expect := own.ModifyIndex
		next := own
		next.Accept = slices.Clone(own.Accept)
		if accept {
			next.Accept = append(next.Accept, network)
		} else {
			next.Accept = slices.DeleteFunc(next.Accept, func(n string) bool { return n == network })
		}
		return fsm.MsgTrustAnchorPut, fsm.TrustAnchorPut{Anchor: next, ExpectModifyIndex: &expect}, true
	})
}

// handleSetNetworkExclusive turns the network's exclusive membership on
// or off (its nodes refuse peers that are members of other networks
// too): the flag of its own trust anchor, which the access list shares,
// so Cedar decides trust.write on the own network's anchor, and the
// write is a compare-and-set of the record (fsm.ExclusiveSet) so that a
// concurrent trust add or remove loses nothing. Setting the value it has
// writes nothing.
func (s *Server) handleSetNetworkExclusive(w http.ResponseWriter, r *http.Request, c caller) {
	ctx := c.ctx
	ctx.Anchor = &policy.AnchorTarget{Network: s.network, Own: true}
	if !s.allow(w, c, policy.TrustWrite, ctx) {
		return
	}
	var req api.NetworkExclusiveRequest
	if !s.decode(w, r, &req) {
		return
	}
	if req.Exclusive == nil {
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, `exclusive is required: {"exclusive": true} or {"exclusive": false}`)
		return
	}
	want := *req.Exclusive
	idx, err := s.casRetry(r.Context(), func() (fsm.MsgType, any, bool) {
		own, ok := s.store.TrustAnchor(s.network)
		if !ok || own.Exclusive == want {
			return 0, nil, false
		}
		return fsm.MsgExclusiveSet, fsm.ExclusiveSet{Network: s.network, Exclusive: want, ExpectModifyIndex: own.ModifyIndex}, true
	})
	if err != nil && !errors.Is(err, errNothingTo) {
		s.writeErr(w, err)
		return
	}
	if _, ok := s.store.TrustAnchor(s.network); !ok {
		writeError(w, http.StatusServiceUnavailable, api.CodeNoLeader, "the network has no trust anchor yet; try again once the server is ready")
		return
	}
	if errors.Is(err, errNothingTo) {
		s.log.Info("network exclusive membership unchanged", "network", s.network, "exclusive", want)
	} else {
		s.log.Info("network exclusive membership set", "network", s.network, "exclusive", want, "index", idx, "by", c.ctx.Subject)
	}
	writeJSON(w, http.StatusOK, s.networkInfo())
}
