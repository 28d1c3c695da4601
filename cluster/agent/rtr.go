package agent

import (
	"context"
	"fmt"
	"net"

	"github.com/keymesh/keymesh/routing/rtr"
)

// listenRTR binds RunConfig.RTRListen and makes the RTR server of the
// followed trust state's route authorizations.
func (a *Agent) listenRTR() (*rtr.Server, net.Listener, error) {
	ln, err := net.Listen("tcp", a.cfg.RTRListen)
	if err != nil {
		return nil, nil, fmt.Errorf("agent: --rtr-listen %s: %w (choose another port, or stop what listens there)", a.cfg.RTRListen, err)
	}
	srv, err := rtr.NewServer(rtr.Config{Cache: rtr.NewCache(a.state.Network, 0), Logger: a.log.Named("rtr"), MaxRouters: a.cfg.RTRMaxRouters})
	if err != nil {
		ln.Close()
		return nil, nil, err
	}
	a.rtr.Store(srv)
	a.rtrAddr.Store(ln.Addr().(*net.TCPAddr))
	return srv, ln, nil
}

// RTRAddr is where the agent serves RTR, or nil.
func (a *Agent) RTRAddr() *net.TCPAddr { return a.rtrAddr.Load() }

// serveRTR keeps the cache at the followed trust state, at the state's
// index as serial (the route authorizations as they were at that Raft
// index, so the roots' caches agree), and serves it until ctx ends. The
// trust state arrives in batches, so the agent's serials are a subset of
// the roots' indexes: a router moving from an agent to a root may be
// answered Cache Reset once, never wrong data.
func (a *Agent) serveRTR(ctx context.Context, srv *rtr.Server, ln net.Listener) error {
	cache := srv.Cache()
	go func() {
		for {
			ch := a.follower.Changed()
			if cur := a.follower.Current(); cur != nil {
				cache.Load(cur.Index(), rtr.VRPsOf(cur.RouteAuths()))
			}
			select {
			case <-ch:
			case <-ctx.Done():
				return
			}
		}
	}()
	a.log.Info("serving route authorizations over RTR", "addr", ln.Addr().String())
	return srv.Run(ctx, ln)
}
