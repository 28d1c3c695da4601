package cluster

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"slices"
	"time"

	"github.com/keymesh/keymesh/ca"
	"github.com/keymesh/keymesh/cluster/api"
	"github.com/keymesh/keymesh/fsm"
)

// casRetries is how often a read-modify-write of a record is tried again
// when another write changed it meanwhile, after a pause of up to
// casPause (random, so that writers that collided spread out).
const (
	casRetries = 20
	casPause   = 20 * time.Millisecond
)

// parsePrefix accepts a prefix in its canonical form (the network
// address) and says which form to use otherwise.
func parsePrefix(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return p, badRequest("prefix %q is not an IPv4 or IPv6 prefix like 10.0.0.0/8 or 2001:db8::/32", s)
	}
	if m := p.Masked(); m != p {
		return p, badRequest("prefix %q has host bits set; use %s", s, m)
	}
	return p, nil
}

func (s *Server) handleListRouteAuths(w http.ResponseWriter, r *http.Request) {
	if !s.maybeConsistent(w, r) {
		return
	}
	out := s.store.RouteAuths()
	if out == nil {
		out = []fsm.RouteAuth{}
	}
	writeJSON(w, http.StatusOK, out)
}

// checkASN refuses an AS number fsm.CheckASN refuses, as a bad request.
func checkASN(asn uint32) error {
	if err := fsm.CheckASN(asn); err != nil {
		return badRequest("asn: %v (private AS numbers are 64512-65534 and 4200000000-4294967294)", err)
	}
	return nil
}

// networkInfo is the network as GET /v1/network shows it: its AS number
// from its CA record, its exclusive membership from its own trust anchor.
func (s *Server) networkInfo() api.NetworkInfo {
	rec, _ := s.store.CA(s.network)
	own, _ := s.store.TrustAnchor(s.network)
	return api.NetworkInfo{Network: s.network, ASN: rec.ASN, Index: rec.ModifyIndex, Exclusive: own.Exclusive, AnchorIndex: own.ModifyIndex}
}

// handleNetwork answers the network's name, AS number and exclusive
// membership.
func (s *Server) handleNetwork(w http.ResponseWriter, r *http.Request) {
	if !s.maybeConsistent(w, r) {
		return
	}
	writeJSON(w, http.StatusOK, s.networkInfo())
}

// handleSetNetworkASN sets the network's AS number in its CA record,
// compare-and-set so that a concurrent change of the record (a gossip key
// or seal rotation) loses nothing. Setting the number it has writes
// nothing.
func (s *Server) handleSetNetworkASN(w http.ResponseWriter, r *http.Request) {
	var req api.NetworkASNRequest
	if !s.decode(w, r, &req) {
		return
	}
	if err := checkASN(req.ASN); err != nil {
		s.writeErr(w, err)
		return
	}
	var prev uint32
	idx, err := s.casRetry(r.Context(), func() (fsm.MsgType, any, bool) {
		cur, ok := s.store.CA(s.network)
		if !ok || cur.ASN == req.ASN {
			return 0, nil, false
		}
		prev = cur.ASN
		next := cur
		next.ASN = req.ASN
		return fsm.MsgCAUpdate, fsm.CAUpdate{CA: next, ExpectModifyIndex: cur.ModifyIndex}, true
	})
	if err != nil && !errors.Is(err, errNothingTo) {
		s.writeErr(w, err)
		return
	}
	rec, ok := s.store.CA(s.network)
	if !ok {
		writeError(w, http.StatusServiceUnavailable, api.CodeNoLeader, "the network has no CA record yet; try again once the server is ready")
		return
	}
	if errors.Is(err, errNothingTo) {
		s.log.Info("network AS number unchanged", "network", s.network, "asn", rec.ASN)
	} else {
		s.log.Info("network AS number set", "network", s.network, "asn", req.ASN, "previous_asn", prev, "index", idx)
	}
	writeJSON(w, http.StatusOK, s.networkInfo())
}

// handleAuthorizeRoute adds origins to a prefix's authorization (made if
// there is none), compare-and-set on the record so that two operators
// adding origins at once lose neither. Its AS number is the one asked
// for, else the one it has, else the network's; with none at all it is
// made anyway and the answer warns that routers are not served it.
func (s *Server) handleAuthorizeRoute(w http.ResponseWriter, r *http.Request) {
	var req api.RouteAuthRequest
	if !s.decode(w, r, &req) {
		return
	}
	if req.ASN != 0 {
		if err := checkASN(req.ASN); err != nil {
			s.writeErr(w, err)
			return
		}
	}
	pfx, err := parsePrefix(req.Prefix)
	if err != nil {
		s.writeErr(w, err)
		return
	}
	if len(req.Origins) == 0 {
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, "name at least one origin (a node id)")
		return
	}
	for _, o := range req.Origins {
		if err := ca.ValidateNodeID(o); err != nil {
			writeError(w, http.StatusBadRequest, api.CodeBadRequest, "origin: "+err.Error())
			return
		}
	}
	if req.MaxLength != 0 && (req.MaxLength < pfx.Bits() || req.MaxLength > pfx.Addr().BitLen()) {
		writeError(w, http.StatusBadRequest, api.CodeBadRequest, fmt.Sprintf("max length %d is outside %d..%d for %s", req.MaxLength, pfx.Bits(), pfx.Addr().BitLen(), pfx))
		return
	}
	key := pfx.String()
	idx, err := s.casRetry(r.Context(), func() (fsm.MsgType, any, bool) {
		cur, ok := s.store.RouteAuth(key)
		expect := cur.ModifyIndex
		if !ok {
			expect, cur = 0, fsm.RouteAuth{Prefix: key, MaxLength: pfx.Bits()}
		}
		next := cur
		next.Origins = slices.Clone(cur.Origins)
		for _, o := range req.Origins {
			if !slices.Contains(next.Origins, o) {
				next.Origins = append(next.Origins, o)
			}
		}
		slices.Sort(next.Origins)
		if req.MaxLength != 0 {
			next.MaxLength = req.MaxLength
		}
		switch {
		case req.ASN != 0:
			next.ASN = req.ASN
		case next.ASN == 0:
			network, _ := s.store.CA(s.network)
			next.ASN = network.ASN
		}
		return fsm.MsgRouteAuthPut, fsm.RouteAuthPut{Auth: next, ExpectModifyIndex: &expect}, true
	})
	if err != nil {
		s.writeErr(w, err)
		return
	}
	auth, _ := s.store.RouteAuth(key)
	out := api.RouteAuthResponse{Auth: &auth, Index: idx}
	s.log.Info("route authorized", "prefix", key, "origins", auth.Origins, "max_length", auth.MaxLength, "asn", auth.ASN, "index", idx)
	if auth.ASN == 0 {
		out.Warning = fmt.Sprintf("%s has no AS number: it is not served to routers until one is set "+
			"(`keymesh network set-asn ASN` for the network's, then authorize it again; or `keymesh routes authorize %s --origin ... --asn ASN`)", key, key)
		s.log.Warn("route authorization has no AS number: not served to routers until one is set", "prefix", key, "index", idx)
	}
	writeJSON(w, http.StatusOK, out)
}

// handleUnauthorizeRoute removes origins from a prefix's authorization,
// or the whole authorization when no origin is named (or none is left).
func (s *Server) handleUnauthorizeRoute(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	pfx, err := parsePrefix(q.Get("prefix"))
	if err != nil {
		s.writeErr(w, err)
		return
	}
	key, origins := pfx.String(), q["origin"]
	removed := false
	idx, err := s.casRetry(r.Context(), func() (fsm.MsgType, any, bool) {
		cur, ok := s.store.RouteAuth(key)
		if !ok {
			return 0, nil, false
		}
		expect := cur.ModifyIndex
		left := slices.DeleteFunc(slices.Clone(cur.Origins), func(o string) bool { return slices.Contains(origins, o) })
		if len(origins) == 0 || len(left) == 0 {
			removed = true
			return fsm.MsgRouteAuthDelete, fsm.RouteAuthDelete{Prefix: key, ExpectModifyIndex: &expect}, true
		}
		removed = false
		cur.Origins = left
		return fsm.MsgRouteAuthPut, fsm.RouteAuthPut{Auth: cur, ExpectModifyIndex: &expect}, true
	})
	switch {
	case errors.Is(err, errNothingTo):
		writeError(w, http.StatusNotFound, api.CodeNotFound, fmt.Sprintf("no route authorization for %s; `keymesh routes authorizations` lists them", key))
		return
	case err != nil:
		s.writeErr(w, err)
		return
	}
	out := api.RouteAuthResponse{Removed: removed, Index: idx}
	if !removed {
		auth, _ := s.store.RouteAuth(key)
		out.Auth = &auth
	}
	s.log.Info("route unauthorized", "prefix", key, "origins", origins, "removed", removed, "index", idx)
	writeJSON(w, http.StatusOK, out)
}

// errNothingTo: a read-modify-write found nothing to change.
var errNothingTo = errors.New("cluster: nothing to change")

// casRetry proposes the command build makes from the state it reads, and
// builds it again on a conflict (another write changed the record
// meanwhile), a few times. build returns false when there is nothing to
// do (errNothingTo).
func (s *Server) casRetry(ctx context.Context, build func() (fsm.MsgType, any, bool)) (uint64, error) {
	var err error
	for range casRetries {
		t, p, ok := build()
		if !ok {
			return 0, errNothingTo
		}
		var idx uint64
		if idx, err = s.Propose(ctx, t, p); !errors.Is(err, fsm.ErrConflict) {
			return idx, err
		}
		// Read again at the leader's index: the conflicting write is
		// applied here before the next try.
		if rerr := s.ConsistentRead(ctx); rerr != nil {
			return 0, rerr
		}
		pause := time.NewTimer(rand.N(casPause))
		select {
		case <-ctx.Done():
			pause.Stop()
			return 0, ctx.Err()
		case <-pause.C:
		}
	}
	return 0, err
}
