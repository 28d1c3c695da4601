package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/keymesh/keymesh/cluster/agent"
	"github.com/keymesh/keymesh/cluster/run"
	"github.com/keymesh/keymesh/fsm"
	"github.com/keymesh/keymesh/session"
)

// devAgents are the node agents `keymesh dev` runs: one for every node
// with a certificate, each taking peering sessions on a loopback port and
// dialling the others, and gossiping on another (the first alone, the
// others joining it), so the development mesh peers from the start.
type devAgents struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// startDevAgents starts the agents of the nodes that hold a certificate
// and fills in where each takes sessions. An agent that stops (its node
// revoked, say) is logged; the cluster goes on. It returns once every
// agent listens.
func (a *app) startDevAgents(ctx context.Context, nodes []devNodeInfo, log hclog.Logger) (*devAgents, error) {
	ctx, cancel := context.WithCancel(ctx)
	d := &devAgents{cancel: cancel}
	type runner struct {
		node *devNodeInfo
		ln   net.Listener
	}
	var rs []runner
	for i := range nodes {
		n := &nodes[i]
		if n.Status != fsm.RegistrationApproved {
			continue
		}
		if _, err := agent.Certificate(n.DataDir); err != nil {
			continue // approved, not collected yet
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			d.stop()
			for _, r := range rs {
				r.ln.Close()
			}
			return nil, fmt.Errorf("a peering port for %s: %w", n.Name, err)
		}
		n.Listen = ln.Addr().String()
		rs = append(rs, runner{node: n, ln: ln})
	}
	var ready []<-chan struct{}
	var join []string // the first agent's gossip address, once it gossips
	for i, r := range rs {
		var peers []session.PeerConfig
		for j, o := range rs {
			if j != i {
				peers = append(peers, session.PeerConfig{ID: o.node.Name, Addr: o.node.Listen})
			}
		}
		alog := log.Named(r.node.Name)
		ag, err := agent.New(agent.RunConfig{DataDir: r.node.DataDir, Logger: alog, Clock: a.now, SessionListener: r.ln, Peers: peers,
			GossipAddr: "127.0.0.1:0", GossipJoin: join})
		if err == nil {
			var rn *agent.Renewer
			if rn, err = agent.NewRenewer(agent.RenewerConfig{DataDir: r.node.DataDir, Clock: a.now, Logger: alog.Named("renewer")}); err == nil {
				var g run.Group
				g.Add("agent", ag)
				g.Add("renewer", rn)
				ready = append(ready, ag.Ready())
				r.node.Agent = true
				d.wg.Add(1)
				go func() {
					defer d.wg.Done()
					err := g.Run(ctx)
					switch {
					case errors.Is(err, agent.ErrRevoked):
						alog.Warn("the node is revoked; its agent stopped", "error", err)
					case err != nil:
						alog.Error("the node's agent stopped", "error", err)
					}
				}()
				// The others join the gossip of the first.
				select {
				case <-ag.GossipReady():
					r.node.Gossip = ag.Gossip().Advertised()
					if join == nil {
						join = []string{r.node.Gossip}
					}
				case <-time.After(30 * time.Second):
					alog.Warn("the agent does not gossip yet; the others start without joining it")
				case <-ctx.Done():
					d.stop()
					return nil, ctx.Err()
				}
				continue
			}
		}
		r.ln.Close()
		for _, o := range rs[i+1:] {
			o.ln.Close()
		}
		d.stop()
		return nil, fmt.Errorf("the agent of %s: %w", r.node.Name, err)
	}
	for _, ch := range ready {
		select {
		case <-ch:
		case <-ctx.Done():
			d.stop()
			return nil, ctx.Err()
		}
	}
	return d, nil
}

// stop stops the agents and waits for them.
func (d *devAgents) stop() {
	d.cancel()
	d.wg.Wait()
}

// devPeerFlags are the --peer flags that dial the agents of nodes, and
// the gossip flags that join theirs.
func devPeerFlags(nodes []devNodeInfo) string {
	var s, join string
	for _, n := range nodes {
		if n.Listen != "" {
			s += fmt.Sprintf(" --peer %s@%s", n.Name, n.Listen)
		}
		if n.Gossip != "" && join == "" {
			join = n.Gossip
		}
	}
	if join != "" {
		s += " --gossip-addr 127.0.0.1:0 --gossip-join " + join
	}
	return s
}

// devFirstAgent is the data directory of the first node whose agent runs,
// "" if none does.
func devFirstAgent(nodes []devNodeInfo) string {
	for _, n := range nodes {
		if n.Agent {
			return n.DataDir
		}
	}
	return ""
}
