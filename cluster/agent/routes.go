package agent

import (
	"context"
	"crypto"
	"errors"

	"github.com/keymesh/keymesh/routing"
	"github.com/keymesh/keymesh/session"
)

// The agent's routing (package routing) runs over its sessions: the
// Router takes every established session's UPDATEs, validates them
// against the followed trust state with the agent's verifier, keeps the
// RIBs, signs this node's routes and its path segments with the node key,
// and checks everything again on each trust change.

// newRouter makes the router over speaker s.
func (a *Agent) newRouter(s *session.Speaker) (*routing.Router, error) {
	v, err := routing.NewValidator(routing.ValidatorConfig{Node: a.state.NodeID, Network: a.state.Network, Keys: a.verifier,
		View: a.view, Clock: a.cfg.Clock, ReplayWindow: a.cfg.ReplayWindow})
	if err != nil {
		return nil, err
	}
	peers := map[string]session.PeerConfig{}
	var locks []routing.Lock
	for _, p := range a.cfg.Peers {
		peers[p.ID] = p
		for _, l := range p.Locks {
			locks = append(locks, routing.Lock{Prefix: l, Via: p.ID})
		}
	}
	return routing.NewRouter(routing.RouterConfig{Node: a.state.NodeID, Network: a.state.Network, Validator: v,
		Signer: a.routeSigner, Send: s.Send, HoldDown: s.HoldDown, Locks: locks, Clock: a.cfg.Clock,
		Policy: func(peer string) routing.PeerPolicy {
			p, ok := peers[peer]
			if !ok {
				p.Role = session.DefaultRole(peer) // as the session took it
			}
			return routing.PeerPolicy{Role: routing.Role(p.Role), RejectNotFound: p.RejectNotFound, MaxPrefix: p.MaxPrefix, HoldDown: p.HoldDown}
		},
		Logger: a.log.Named("routing")})
}

// routeSigner is the node's current key for routes.
func (a *Agent) routeSigner() (routing.Signer, error) {
	nc, err := a.creds.current()
	if err != nil {
		return routing.Signer{}, err
	}
	k, ok := nc.tls.PrivateKey.(crypto.Signer)
	if !ok {
		return routing.Signer{}, errors.New("agent: the node key cannot sign")
	}
	return routing.Signer{Node: a.state.NodeID, KID: nc.minter.KID(), Key: k}, nil
}

// Router is the agent's router once Run started it, nil before or without
// sessions.
func (a *Agent) Router() *routing.Router { return a.router.Load() }

// handlers tells the router and the configured handler of sessions.
type handlers []session.Handler

func (h handlers) Established(p string) {
	for _, x := range h {
		x.Established(p)
	}
}
func (h handlers) Update(p string, b []byte) {
	for _, x := range h {
		x.Update(p, b)
	}
}
func (h handlers) RouteRefresh(p string) {
	for _, x := range h {
		x.RouteRefresh(p)
	}
}
func (h handlers) Down(p, reason string) {
	for _, x := range h {
		x.Down(p, reason)
	}
}

// routerHandler is the router's place among the session handlers, set
// once Run made it.
type routerHandler struct{ a *Agent }

func (r routerHandler) get() *routing.Router { return r.a.router.Load() }
func (r routerHandler) Established(p string) {
	if x := r.get(); x != nil {
		x.Established(p)
	}
}
func (r routerHandler) Update(p string, b []byte) {
	if x := r.get(); x != nil {
		x.Update(p, b)
	}
}
func (r routerHandler) RouteRefresh(p string) {
	if x := r.get(); x != nil {
		x.RouteRefresh(p)
	}
}
func (r routerHandler) Down(p, reason string) {
	if x := r.get(); x != nil {
		x.Down(p, reason)
	}
}

// ErrNoRouting: the agent runs no sessions, so no routing.
var ErrNoRouting = errors.New("agent: this agent runs no peering sessions (start it with --listen or --peer)")

// AnnounceRequest is POST /v1/routes.
type AnnounceRequest struct {
	NLRI    string            `json:"nlri"`
	NextHop string            `json:"next_hop,omitempty"`
	Meta    map[string]string `json:"meta,omitempty"`
}

// WithdrawRequest is POST /v1/routes/withdraw.
type WithdrawRequest struct {
	NLRI string `json:"nlri"`
}

// RoutesResponse is GET /v1/routes.
type RoutesResponse struct {
	Node   string                `json:"node"`
	Key    routing.KeyStatus     `json:"key"`
	Routes []routing.RouteStatus `json:"routes"`
}

func (a *Agent) routes(ctx context.Context, peer string) (RoutesResponse, error) {
	r := a.Router()
	if r == nil {
		return RoutesResponse{}, ErrNoRouting
	}
	ks, err := r.Keys(ctx)
	if err != nil {
		return RoutesResponse{}, err
	}
	rs, err := r.Routes(ctx, peer)
	if err != nil {
		return RoutesResponse{}, err
	}
	if rs == nil {
		rs = []routing.RouteStatus{}
	}
	return RoutesResponse{Node: a.state.NodeID, Key: ks, Routes: rs}, nil
}

func (a *Agent) announce(ctx context.Context, req AnnounceRequest) (routing.RouteStatus, error) {
	r := a.Router()
	if r == nil {
		return routing.RouteStatus{}, ErrNoRouting
	}
	n, err := routing.ParseNLRI(req.NLRI)
	if err != nil {
		return routing.RouteStatus{}, err
	}
	rt, err := r.Announce(ctx, n, req.NextHop, req.Meta)
	if err != nil {
		return routing.RouteStatus{}, err
	}
	return routing.RouteStatus{NLRI: rt.Key(), Origin: rt.Origin, Path: rt.Nodes(), Local: true, SignedAt: rt.Signed().UTC(),
		Seq: rt.Seq, KID: rt.KID, NextHop: rt.NextHop}, nil
}

func (a *Agent) withdraw(ctx context.Context, req WithdrawRequest) error {
	r := a.Router()
	if r == nil {
		return ErrNoRouting
	}
	n, err := routing.ParseNLRI(req.NLRI)
	if err != nil {
		return err
	}
	return r.Withdraw(ctx, n)
}
