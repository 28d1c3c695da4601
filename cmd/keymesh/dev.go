package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/keymesh/keymesh/ca"
	"github.com/keymesh/keymesh/cluster"
	"github.com/keymesh/keymesh/cluster/agent"
	"github.com/keymesh/keymesh/cluster/api"
	"github.com/keymesh/keymesh/cluster/client"
	"github.com/keymesh/keymesh/fsm"
)

// Settings of the development cluster.
const (
	devServers  = 3
	devHost     = "127.0.0.1:0" // port 0: the cluster picks free ports
	devReadyMax = 30 * time.Second
	devTokenTTL = 10 * time.Minute
	devNodes    = 3 // node-1 and node-2 join with a token, node-3 waits for approval
)

// envPending names the pending registration of the development cluster, for
// the tour to approve.
const envPending = "KEYMESH_PENDING_REGISTRATION"

// devServerInfo is one server of the development cluster as printed.
type devServerInfo struct {
	Name     string `json:"name"`
	RaftAddr string `json:"raft_addr"`
	APIAddr  string `json:"api_addr"`
	RTRAddr  string `json:"rtr_addr"`
	DataDir  string `json:"data_dir"`
}

// devNodeInfo is one node of the development cluster as printed.
type devNodeInfo struct {
	Name           string `json:"name"`
	DataDir        string `json:"data_dir"`
	Status         string `json:"status"` // approved, pending or denied
	RegistrationID string `json:"registration_id"`
	// Agent is true when keymesh dev runs the node's agent; Listen is
	// where it takes peering sessions.
	Agent  bool   `json:"agent"`
	Listen string `json:"listen,omitempty"`
	// Gossip is where the agent gossips.
	Gossip string `json:"gossip,omitempty"`
}

// devOutput is what `keymesh dev` prints once the cluster is ready.
type devOutput struct {
	Network             string            `json:"network"`
	Dir                 string            `json:"dir"`
	CAHash              string            `json:"ca_hash"`
	CredentialPath      string            `json:"credential_path"`
	AdminTokenPath      string            `json:"admin_token_path"`
	RootsPath           string            `json:"roots_path"`
	Servers             []devServerInfo   `json:"servers"`
	Nodes               []devNodeInfo     `json:"nodes"`
	PendingRegistration string            `json:"pending_registration,omitempty"`
	Env                 map[string]string `json:"env"`
	Keep                bool              `json:"keep"`
}

func (a *app) devCmd() *cobra.Command {
	var (
		dir, envFile, network string
		keep                  bool
		sf                    serveFlags
	)
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run three root servers and three nodes on loopback for trying keymesh out",
		Long: `Run a three-server root cluster in this process, on 127.0.0.1 with free ports,
in a temporary directory (or --dir), and register three nodes with it:
node-1 and node-2 with a node join token, node-3 without one, left pending
for an operator to approve. The agents of the approved nodes run in this
process too, each taking peering sessions on a loopback port and dialling
the others. It prints the endpoints, the CA hash, the admin credential, the
nodes' data directories and peering addresses, the pending registration, the
command that runs node-3's agent into the mesh once approved, and the
environment for client commands (with ` + envPending + `).

With --env-file, those exports are also written to a file, last and
atomically: the file appears when the cluster is ready, and is removed when
it stops. Ctrl-C stops the servers and removes the directory unless --keep.
A directory kept from an earlier run is started again.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := ca.ValidateNetwork(network); err != nil {
				return usagef("--network: %w", err)
			}
			opts, err := sf.options(a.stderr)
			if err != nil {
				return err
			}
			return a.runDev(cmd.Context(), devConfig{dir: dir, envFile: envFile, network: network, keep: keep, opts: opts})
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&dir, "dir", "", "directory for the servers' data (default: a new temporary directory)")
	fl.BoolVar(&keep, "keep", false, "keep the directory when stopping")
	fl.StringVar(&envFile, "env-file", "", "also write the KEYMESH_* exports to this file once ready")
	fl.StringVar(&network, "network", "dev.keymesh.test", "network name")
	sf.register(cmd, "warn")
	return cmd
}

type devConfig struct {
	dir, envFile, network string
	keep                  bool
	opts                  cluster.Options
}

// runDev starts the cluster, prints how to use it, serves until ctx is
// done, and cleans up.
func (a *app) runDev(ctx context.Context, cfg devConfig) (err error) {
	log := cfg.opts.Logger
	dir, restart, err := devDir(cfg.dir)
	if err != nil {
		return err
	}
	var servers []*cluster.Server
	defer func() {
		stopAll(servers)
		if cfg.envFile != "" {
			os.Remove(cfg.envFile)
		}
		// A kept cluster that fails to start again stays for inspection.
		if cfg.keep || restart && err != nil {
			log.Info("kept the data directory", "dir", dir)
			return
		}
		if rerr := os.RemoveAll(dir); rerr != nil && err == nil {
			err = fmt.Errorf("removing %s: %w", dir, rerr)
		}
	}()
	names := make([]string, devServers)
	for i := range names {
		names[i] = fmt.Sprintf("r%d", i+1)
	}
	dirOf := func(name string) string { return filepath.Join(dir, name) }
	opts := func(name string) cluster.Options {
		o := cfg.opts
		o.Logger = log.Named(name)
		o.RTRAddr = devHost // every root serves RTR; the addresses are printed
		return o
	}
	if restart {
		for _, n := range names {
			srv, err := cluster.Open(dirOf(n), opts(n))
			if err != nil {
				return fmt.Errorf("restarting %s from %s: %w", n, dirOf(n), err)
			}
			servers = append(servers, srv)
			if err := srv.Start(ctx); err != nil {
				return fmt.Errorf("restarting %s from %s: %w", n, dirOf(n), err)
			}
		}
	} else {
		first, res, err := cluster.Bootstrap(cluster.BootstrapConfig{
			Network: cfg.network, Name: names[0], DataDir: dirOf(names[0]), RaftAddr: devHost, APIAddr: devHost, ASN: 64500, Options: opts(names[0]),
		})
		if err != nil {
			return fmt.Errorf("bootstrapping %s: %w", names[0], err)
		}
		servers = append(servers, first)
		if err := first.Start(ctx); err != nil {
			return fmt.Errorf("bootstrapping %s: %w", names[0], err)
		}
		admin, err := client.New(client.Config{Server: first.APIAddr(), CAFile: res.RootsPath, Credential: res.CredentialPath})
		if err != nil {
			return err
		}
		defer admin.Close()
		token := res.RootJoinToken
		for _, n := range names[1:] {
			if token == "" {
				tok, err := admin.CreateJoinToken(ctx, api.CreateJoinTokenRequest{Kind: "root", TTL: devTokenTTL.String(), Description: "keymesh dev: " + n})
				if err != nil {
					return fmt.Errorf("making a root-join token for %s: %w", n, err)
				}
				token = tok.Secret
			}
			srv, err := cluster.Join(ctx, cluster.JoinConfig{
				Join: first.APIAddr(), Token: token, CAHash: res.CAHash, Name: n, DataDir: dirOf(n),
				RaftAddr: devHost, APIAddr: devHost, Options: opts(n),
			})
			if err != nil {
				return fmt.Errorf("joining %s: %w", n, err)
			}
			token = ""
			servers = append(servers, srv)
			if err := srv.Start(ctx); err != nil {
				return fmt.Errorf("joining %s: %w", n, err)
			}
		}
	}
	first := servers[0]
	c := conn{server: first.APIAddr(), caFile: cluster.RootsPath(dirOf(names[0])), credential: cluster.CredentialPath(dirOf(names[0]))}
	if err := waitHealthy(ctx, c); err != nil {
		return err
	}
	hash, err := c.caHash()
	if err != nil {
		return err
	}
	nodes, err := a.devNodes(ctx, dir, c, hash, first.Network(), restart)
	if err != nil {
		return err
	}
	agents, err := a.startDevAgents(ctx, nodes, log)
	if err != nil {
		return err
	}
	defer agents.stop() // before the servers stop
	out := devOutput{
		Network: first.Network(), Dir: dir, CAHash: hash, CredentialPath: c.credential, RootsPath: c.caFile, Keep: cfg.keep,
		AdminTokenPath: cluster.AdminTokenPath(dirOf(names[0])),
		Nodes:          nodes, Env: map[string]string{envServer: c.server, envCAFile: c.caFile, envCredential: c.credential, envRTR: servers[0].RTRAddr()},
	}
	for _, s := range servers {
		out.Servers = append(out.Servers, devServerInfo{Name: s.Name(), RaftAddr: s.RaftAddr(), APIAddr: s.APIAddr(), RTRAddr: s.RTRAddr(), DataDir: s.DataDir()})
	}
	var pendingNode devNodeInfo
	for _, n := range nodes {
		if n.Status == fsm.RegistrationPending {
			pendingNode, out.PendingRegistration = n, n.RegistrationID
			out.Env[envPending] = n.RegistrationID
		}
	}
	exports := exportLine(c, out.PendingRegistration, out.Env[envRTR])
	if err := a.emit(out, func(w io.Writer) {
		fmt.Fprintf(w, "keymesh dev: network %s, %d root servers in %s\n\n", out.Network, len(servers), dir)
		var cells [][]string
		for _, s := range out.Servers {
			cells = append(cells, []string{"  " + s.Name, s.APIAddr, s.RaftAddr, s.RTRAddr})
		}
		table(w, []string{"  NAME", "API", "RAFT", "RTR (routers)"}, cells)
		fmt.Fprintf(w, "\n  CA hash     %s\n  credential  %s\n  admin token %s\n  roots       %s\n\n", hash, c.credential, out.AdminTokenPath, c.caFile)
		cells = nil
		for _, n := range out.Nodes {
			peering := "-"
			if n.Agent {
				peering = n.Listen
			}
			cells = append(cells, []string{"  " + n.Name, n.Status, peering, n.RegistrationID, n.DataDir})
		}
		table(w, []string{"  NODE", "STATUS", "PEERING", "REGISTRATION", "DATA DIR"}, cells)
		if d := devFirstAgent(out.Nodes); d != "" {
			fmt.Fprintf(w, "\nThe agents of the approved nodes run here, peer and gossip with each other:\n\n  keymesh peers list --data-dir %s\n  keymesh members list --data-dir %s\n", d, d)
		}
		if out.PendingRegistration != "" {
			fmt.Fprintf(w, "\n%s waits for approval; approve it, collect its certificate, and run its agent peering with the others:\n\n  %s\n  %s\n  keymesh node run --data-dir %s --listen 127.0.0.1:0%s\n",
				pendingNode.Name, approveCommand(out.PendingRegistration), resumeCommand(pendingNode.DataDir), pendingNode.DataDir, devPeerFlags(out.Nodes))
		}
		fmt.Fprintln(w)
		fmt.Fprintf(w, "Use it from another shell:\n\n  %s\n\n", exports)
		if cfg.keep {
			fmt.Fprintf(w, "Ctrl-C stops the servers and keeps %s.\n", dir)
		} else {
			fmt.Fprintf(w, "Ctrl-C stops the servers and removes %s.\n", dir)
		}
	}); err != nil {
		return err
	}
	if cfg.envFile != "" {
		if err := writeFileAtomic(cfg.envFile, []byte(exports+"\n")); err != nil {
			return err
		}
	}
	log.Info("ready", "dir", dir)
	<-ctx.Done()
	log.Info("stopping")
	return nil
}

// devDir prepares the directory of the development cluster. restart is
// true when it holds a cluster kept from an earlier run.
func devDir(dir string) (path string, restart bool, err error) {
	if dir == "" {
		d, err := os.MkdirTemp("", "keymesh-dev-")
		if err != nil {
			return "", false, fmt.Errorf("making a temporary directory: %w", err)
		}
		return d, false, nil
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return "", false, err
	}
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return dir, false, os.MkdirAll(dir, 0o700)
	case err != nil:
		return "", false, err
	case len(entries) == 0:
		return dir, false, nil
	}
	if _, err := os.Stat(filepath.Join(dir, "r1", serverFileName)); err == nil {
		return dir, true, nil
	}
	return "", false, fmt.Errorf("--dir %s is not empty and holds no cluster kept by `keymesh dev --keep`; choose an empty or new directory", dir)
}

// stopAll shuts the servers down at once.
func stopAll(servers []*cluster.Server) {
	var wg sync.WaitGroup
	for _, s := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.Shutdown()
		}()
	}
	wg.Wait()
}

// waitHealthy polls the health of c's server until it knows a leader.
func waitHealthy(ctx context.Context, c conn) error {
	ctx, cancel := context.WithTimeout(ctx, devReadyMax)
	defer cancel()
	cl, err := c.dial(c.server, time.Second)
	if err != nil {
		return err
	}
	defer cl.Close()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		h, err := cl.Health(ctx)
		if err == nil && h.Status == "ok" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the development cluster has no leader after %s: %w", devReadyMax, c.explain(err))
		case <-tick.C:
		}
	}
}

// exportLine is the shell line that points client commands at c, and
// names the pending registration when there is one.
func exportLine(c conn, pending, rtrAddr string) string {
	words := []string{
		"export",
		envServer + "=" + shellQuote(c.server),
		envCAFile + "=" + shellQuote(c.caFile),
		envCredential + "=" + shellQuote(c.credential),
	}
	if rtrAddr != "" {
		words = append(words, envRTR+"="+shellQuote(rtrAddr))
	}
	if pending != "" {
		words = append(words, envPending+"="+shellQuote(pending))
	}
	return strings.Join(words, " ")
}

// devNodes registers the nodes of a new development cluster: the first
// ones with a node join token, the last without, left pending. On a
// restart it reports the nodes kept in dir, collecting what was approved
// meanwhile.
func (a *app) devNodes(ctx context.Context, dir string, c conn, hash, network string, restart bool) ([]devNodeInfo, error) {
	names := make([]string, devNodes)
	for i := range names {
		names[i] = fmt.Sprintf("node-%d", i+1)
	}
	var nodes []devNodeInfo
	if restart {
		for _, n := range names {
			nd := filepath.Join(dir, n)
			if _, err := os.Stat(nd); err != nil {
				continue
			}
			res, err := agent.Collect(ctx, nd, a.now)
			if err != nil && !errors.Is(err, agent.ErrPending) && !errors.Is(err, agent.ErrDenied) {
				return nil, fmt.Errorf("node %s in %s: %w", n, nd, explainNode("collection", err))
			}
			nodes = append(nodes, devNodeInfo{Name: n, DataDir: nd, Status: res.Status, RegistrationID: res.RegistrationID})
		}
		return nodes, nil
	}
	admin, err := c.dial(c.server, 0)
	if err != nil {
		return nil, err
	}
	defer admin.Close()
	withToken := names[:len(names)-1]
	tok, err := admin.CreateJoinToken(ctx, api.CreateJoinTokenRequest{Kind: "node", Principal: fsm.PrincipalNode, Uses: len(withToken),
		TTL: devTokenTTL.String(), Description: "keymesh dev: " + strings.Join(withToken, ", ")})
	if err != nil {
		return nil, fmt.Errorf("making a node join token: %w", c.explain(err))
	}
	for i, n := range names {
		cfg := agent.JoinConfig{Server: c.server, CAHash: hash, Network: network, NodeID: n, DataDir: filepath.Join(dir, n),
			DNSNames: []string{n + "." + network}, Clock: a.now}
		if i < len(withToken) {
			cfg.Token = tok.Secret
		}
		res, err := agent.Join(ctx, cfg)
		if err != nil {
			return nil, fmt.Errorf("registering %s: %w", n, explainNode("registration", err))
		}
		nodes = append(nodes, devNodeInfo{Name: n, DataDir: cfg.DataDir, Status: res.Status, RegistrationID: res.RegistrationID})
	}
	return nodes, nil
}

// writeFileAtomic writes data to path through a temporary file and a
// rename, so that the file appears complete or not at all.
func writeFileAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	_, werr := tmp.Write(data)
	if cerr := tmp.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Chmod(tmp.Name(), 0o644)
	}
	if werr != nil {
		return fmt.Errorf("writing %s: %w", path, werr)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
