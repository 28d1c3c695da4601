package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/spf13/cobra"

	"github.com/keymesh/keymesh/ca"
	"github.com/keymesh/keymesh/cluster"
	"github.com/keymesh/keymesh/cluster/api"
	"github.com/keymesh/keymesh/cluster/run"
	"github.com/keymesh/keymesh/routing/rtr"
)

// serveFlags are the runtime flags of every command that runs a root server.
type serveFlags struct {
	heartbeat time.Duration
	election  time.Duration
	lease     time.Duration
	waitCrash bool
	logLevel  string

	regRate            float64
	regBurst           int
	maxPending         int
	maxPendingPerSouce int
	maxBlocking        int
	maxBlockingClient  int

	rtrAddr       string
	rtrMaxRouters int
}

// registerRTR adds the RTR flags of the commands that run one root
// server (not dev, which gives each of its roots a free port).
func (f *serveFlags) registerRTR(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.rtrAddr, "rtr-addr", "", "host:port where routers (BIRD, FRR, GoBGP) get the route authorizations over RTR, plain TCP for loopback or a trusted network (port 0 picks one; default: none)")
	fl.IntVar(&f.rtrMaxRouters, "rtr-max-routers", 0, fmt.Sprintf("router connections served at once over RTR (0: default %d)", rtr.DefaultMaxRouters))
}

func (f *serveFlags) register(cmd *cobra.Command, defaultLevel string) {
	fl := cmd.Flags()
	d := cluster.DefaultRaftTimeouts()
	fl.DurationVar(&f.heartbeat, "raft-heartbeat", 0, fmt.Sprintf("Raft heartbeat timeout (0: LAN default %s)", d.Heartbeat))
	fl.DurationVar(&f.election, "raft-election", 0, fmt.Sprintf("Raft election timeout (0: LAN default %s)", d.Election))
	fl.DurationVar(&f.lease, "raft-lease", 0, fmt.Sprintf("Raft leader lease, at most the heartbeat timeout (0: LAN default %s)", d.LeaderLease))
	fl.BoolVar(&f.waitCrash, "raft-wait-out-crashes", false, "wait out the heartbeat timeout even when the leader's process is gone (its Raft port refuses connections); by default a follower starts an election at once")
	fl.StringVar(&f.logLevel, "log-level", defaultLevel, "log level on stderr: trace, debug, info, warn or error")
	fl.Float64Var(&f.regRate, "registration-rate", 0, "registrations, collections and root joins per second from one client address, cluster-wide (0: default 20)")
	fl.IntVar(&f.regBurst, "registration-burst", 0, "... and in a burst (0: default 40)")
	fl.IntVar(&f.maxPending, "max-pending-registrations", 0, "registrations waiting for an operator, in all (0: default 1000)")
	fl.IntVar(&f.maxPendingPerSouce, "max-pending-per-source", 0, "registrations waiting for an operator from one client address (0: default 20)")
	fl.IntVar(&f.maxBlocking, "max-blocking-queries", 0, "blocking trust queries waiting on this server, in all (0: default 8192); the excess is answered 429")
	fl.IntVar(&f.maxBlockingClient, "max-blocking-per-client", 0, "... from one node or client identity (0: default 4)")
}

// options checks the flags and makes the cluster options with a logger on
// stderr.
func (f serveFlags) options(stderr io.Writer) (cluster.Options, error) {
	for _, d := range []struct {
		flag string
		v    time.Duration
	}{{"--raft-heartbeat", f.heartbeat}, {"--raft-election", f.election}, {"--raft-lease", f.lease}} {
		if d.v < 0 {
			return cluster.Options{}, usagef("%s must not be negative, got %s (0 takes the default)", d.flag, d.v)
		}
	}
	if f.regRate < 0 || f.regBurst < 0 || f.maxPending < 0 || f.maxPendingPerSouce < 0 || f.maxBlocking < 0 || f.maxBlockingClient < 0 {
		return cluster.Options{}, usagef("--registration-rate, --registration-burst, --max-pending-registrations, --max-pending-per-source, " +
			"--max-blocking-queries and --max-blocking-per-client must not be negative (0 takes the default)")
	}
	level, err := parseLevel(f.logLevel)
	if err != nil {
		return cluster.Options{}, err
	}
	if f.rtrAddr != "" {
		if err := checkAddr("rtr-addr", f.rtrAddr); err != nil {
			return cluster.Options{}, err
		}
	}
	if f.rtrMaxRouters < 0 {
		return cluster.Options{}, usagef("--rtr-max-routers must not be negative (0 takes the default)")
	}
	return cluster.Options{
		Raft:   cluster.RaftTimeouts{Heartbeat: f.heartbeat, Election: f.election, LeaderLease: f.lease, NoCrashElection: f.waitCrash},
		Logger: hclog.New(&hclog.LoggerOptions{Name: "keymesh", Level: level, Output: stderr}),
		Limits: cluster.Limits{RegistrationRate: f.regRate, RegistrationBurst: f.regBurst,
			MaxPendingRegistrations: f.maxPending, MaxPendingPerSource: f.maxPendingPerSouce,
			MaxBlockingQueries: f.maxBlocking, MaxBlockingPerClient: f.maxBlockingClient},
		RTRAddr: f.rtrAddr,
		RTR:     cluster.RTROptions{MaxRouters: f.rtrMaxRouters},
	}, nil
}

func parseLevel(s string) (hclog.Level, error) {
	switch l := strings.ToLower(s); l {
	case "trace", "debug", "info", "warn", "error":
		return hclog.LevelFromString(l), nil
	}
	return hclog.NoLevel, usagef("--log-level must be trace, debug, info, warn or error, not %q", s)
}

// require returns a usage error naming the first empty flag.
func require(flags ...[2]string) error {
	for _, f := range flags {
		if f[1] == "" {
			return usagef("--%s is required", f[0])
		}
	}
	return nil
}

// checkAddr checks the shape of a host:port flag; the cluster checks the
// rest.
func checkAddr(flag, addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return usagef("--%s %q is not host:port (for example 127.0.0.1:8300)", flag, addr)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || (n == 0 && flag == "join") {
		return usagef("--%s %q has no valid port", flag, addr)
	}
	return nil
}

// readyInfo is what join and start print once the server is serving.
type readyInfo struct {
	Name     string `json:"name"`
	Network  string `json:"network"`
	RaftAddr string `json:"raft_addr"`
	APIAddr  string `json:"api_addr"`
	RTRAddr  string `json:"rtr_addr,omitempty"`
	DataDir  string `json:"data_dir"`
}

func infoOf(srv *cluster.Server) readyInfo {
	return readyInfo{Name: srv.Name(), Network: srv.Network(), RaftAddr: srv.RaftAddr(), APIAddr: srv.APIAddr(), RTRAddr: srv.RTRAddr(), DataDir: srv.DataDir()}
}

// serve runs srv until ctx is cancelled (SIGINT, SIGTERM) and shuts it
// down cleanly.
func serve(ctx context.Context, srv *cluster.Server, log hclog.Logger, announce func() error) error {
	var g run.Group
	g.Add("root server", srv)
	g.Add("announce", run.Func(func(ctx context.Context) error {
		select {
		case <-srv.Ready():
			return announce()
		case <-ctx.Done():
			return nil
		}
	}))
	if err := g.Run(ctx); err != nil {
		var re *run.Error
		if errors.As(err, &re) && re.Component == "root server" {
			err = re.Err
		}
		return fmt.Errorf("root server %s stopped: %w", srv.Name(), err)
	}
	log.Info("stopped cleanly", "name", srv.Name())
	return nil
}

func (a *app) rootGroupCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "root",
		Short: "Run and manage the root servers of a network",
	}
	groupCmd(cmd)
	cmd.AddCommand(a.bootstrapCmd(), a.joinCmd(), a.startCmd(), a.rootTokenCmd(), a.rootStatusCmd(), a.rootRemoveCmd(), a.rootRotateSealCmd())
	return cmd
}

// bootstrapOutput is what bootstrap prints before it serves.
type bootstrapOutput struct {
	Network        string `json:"network"`
	Name           string `json:"name"`
	RaftAddr       string `json:"raft_addr"`
	APIAddr        string `json:"api_addr"`
	DataDir        string `json:"data_dir"`
	CAHash         string `json:"ca_hash"`
	CredentialPath string `json:"credential_path"`
	AdminTokenPath string `json:"admin_token_path"`
	RootsPath      string `json:"roots_path"`
	RootJoinToken  string `json:"root_join_token"`
	JoinCommand    string `json:"join_command"`
	RTRAddr        string `json:"rtr_addr,omitempty"`
}

func (a *app) bootstrapCmd() *cobra.Command {
	var (
		network, name, dataDir, raftAddr, apiAddr, advertise string
		asnArg                                               string
		sf                                                   serveFlags
	)
	cmd := &cobra.Command{
		Use:   "bootstrap",
		Short: "Make a new network and run its first root server",
		Long: `Make a new network: the AS root CA, the seal key, this server's issuing and TLS
certificates, an admin credential, a system admin token (a bearer token valid
24h, left in admin.token) and a one-time root-join token. Then run
the server as the single Raft voter in the foreground until SIGINT or SIGTERM.

It prints the CA hash and the exact command that joins the next server.`,
		Example: "  keymesh root bootstrap --network mainnet.example.net --name r1 --data-dir /var/lib/keymesh/r1 \\\n" +
			"    --raft-addr 10.0.0.1:8300 --api-addr 10.0.0.1:8400",
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := require([2]string{"network", network}, [2]string{"name", name}, [2]string{"data-dir", dataDir},
				[2]string{"raft-addr", raftAddr}, [2]string{"api-addr", apiAddr}); err != nil {
				return err
			}
			if err := ca.ValidateNetwork(network); err != nil {
				return usagef("--network: %w", err)
			}
			if err := ca.ValidateName(name); err != nil {
				return usagef("--name: %w", err)
			}
			if err := checkAddr("raft-addr", raftAddr); err != nil {
				return err
			}
			if err := checkAddr("api-addr", apiAddr); err != nil {
				return err
			}
			if err := checkAdvertise(advertise); err != nil {
				return err
			}
			var asn uint32
			if cmd.Flags().Changed("asn") {
				var err error
				if asn, err = parseASN("--asn", asnArg); err != nil {
					return err
				}
			}
			opts, err := sf.options(a.stderr)
			if err != nil {
				return err
			}
			if dataDir, err = filepath.Abs(dataDir); err != nil {
				return err
			}
			ctx := cmd.Context()
			srv, res, err := cluster.Bootstrap(cluster.BootstrapConfig{
				Network: network, Name: name, DataDir: dataDir, RaftAddr: raftAddr, APIAddr: apiAddr, RaftAdvertise: advertise, ASN: asn, Options: opts,
			})
			if err != nil {
				return err
			}
			out := bootstrapOutput{
				Network: network, Name: name, RaftAddr: srv.RaftAddr(), APIAddr: srv.APIAddr(), DataDir: dataDir,
				CAHash: res.CAHash, CredentialPath: res.CredentialPath, AdminTokenPath: res.AdminTokenPath, RootsPath: res.RootsPath, RootJoinToken: res.RootJoinToken,
				JoinCommand: joinCommand(srv.APIAddr(), res.RootJoinToken, res.CAHash, nextName(name)),
			}
			shown := struct {
				bootstrapOutput
				ASN uint32 `json:"asn,omitempty"`
			}{out, asn}
			return serve(ctx, srv, opts.Logger, func() error {
				return a.emit(shown, func(w io.Writer) {
					fmt.Fprintf(w, "Bootstrapped network %s.\n\n", out.Network)
					fmt.Fprintf(w, "  server      %s (raft %s, api %s)\n", out.Name, out.RaftAddr, out.APIAddr)
					if asn != 0 {
						fmt.Fprintf(w, "  AS number   %d\n", asn)
					} else {
						fmt.Fprintf(w, "  AS number   none (set it with `keymesh network set-asn ASN`)\n")
					}
					fmt.Fprintf(w, "  CA hash     %s\n", out.CAHash)
					fmt.Fprintf(w, "  credential  %s\n", out.CredentialPath)
					fmt.Fprintf(w, "  admin token %s (bearer, valid 24h; --token-file)\n", out.AdminTokenPath)
					fmt.Fprintf(w, "  roots       %s\n", out.RootsPath)
					fmt.Fprintf(w, "  root-join token (one use, valid 24h, shown only now):\n    %s\n\n", out.RootJoinToken)
					fmt.Fprintf(w, "Join the next root server with:\n\n  %s\n\n", out.JoinCommand)
					fmt.Fprintf(w, "Serving in the foreground; Ctrl-C stops the server.\n")
				})
			})
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&network, "network", "", "network name, a lower-case host name such as mainnet.example.net")
	fl.StringVar(&name, "name", "", "this server's name, unique in the network (e.g. r1)")
	fl.StringVar(&dataDir, "data-dir", "", "empty or new directory for this server's keys and Raft data")
	fl.StringVar(&raftAddr, "raft-addr", "", "host:port for Raft traffic, reachable by the other root servers (port 0 picks one)")
	fl.StringVar(&apiAddr, "api-addr", "", "host:port for the HTTPS API (port 0 picks one)")
	fl.StringVar(&advertise, "raft-advertise", "", "host:port other servers dial for Raft, when not --raft-addr (a proxy or NAT in front)")
	fl.StringVar(&asnArg, "asn", "", "the network's AS number, e.g. 64500: route authorizations without an AS of their own take it (default: none; `keymesh network set-asn` sets it later)")
	sf.register(cmd, "info")
	sf.registerRTR(cmd)
	return cmd
}

// checkAdvertise checks the shape of an optional --raft-advertise.
func checkAdvertise(addr string) error {
	if addr == "" {
		return nil
	}
	if err := checkAddr("raft-advertise", addr); err != nil {
		return err
	}
	if _, port, _ := net.SplitHostPort(addr); port == "0" {
		return usagef("--raft-advertise %q needs a real port, not 0", addr)
	}
	return nil
}

// joinCommand is the command line that joins the next root server.
func joinCommand(apiAddr, token, caHash, name string) string {
	return fmt.Sprintf("keymesh root join --join %s --token %s --ca-hash %s --name %s --data-dir <DIR> --raft-addr <HOST:PORT> --api-addr <HOST:PORT>",
		shellQuote(apiAddr), shellQuote(token), shellQuote(caHash), name)
}

// nextName suggests a name after name: r1 -> r2; otherwise a placeholder.
func nextName(name string) string {
	i := len(name)
	for i > 0 && name[i-1] >= '0' && name[i-1] <= '9' {
		i--
	}
	if i == len(name) {
		return "<NAME>"
	}
	n, err := strconv.Atoi(name[i:])
	if err != nil {
		return "<NAME>"
	}
	return name[:i] + strconv.Itoa(n+1)
}

func (a *app) joinCmd() *cobra.Command {
	var (
		join, token, caHash, name, dataDir, raftAddr, apiAddr, advertise, sealKeyFile string
		sf                                                                            serveFlags
	)
	cmd := &cobra.Command{
		Use:   "join",
		Short: "Join a new root server to a running network and run it",
		Long: `Join a new root server to a running network. The first contact is pinned by the
CA hash printed by bootstrap, and authorised by a one-time root-join token
(from bootstrap or "keymesh root token"). The server then runs in the
foreground as a Raft voter until SIGINT or SIGTERM.

If the join fails, the data directory is left as it was.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := require([2]string{"join", join}, [2]string{"token", token}, [2]string{"ca-hash", caHash},
				[2]string{"name", name}, [2]string{"data-dir", dataDir}, [2]string{"raft-addr", raftAddr},
				[2]string{"api-addr", apiAddr}); err != nil {
				if token == "" && join != "" {
					return usagef("--token is required: make one with `keymesh root token` against a running server")
				}
				return err
			}
			if _, err := ca.ParseHash(caHash); err != nil {
				return usagef("--ca-hash: %w", err)
			}
			if err := ca.ValidateName(name); err != nil {
				return usagef("--name: %w", err)
			}
			for _, f := range [][2]string{{"join", join}, {"raft-addr", raftAddr}, {"api-addr", apiAddr}} {
				if err := checkAddr(f[0], f[1]); err != nil {
					return err
				}
			}
			if err := checkAdvertise(advertise); err != nil {
				return err
			}
			opts, err := sf.options(a.stderr)
			if err != nil {
				return err
			}
			var sealKey []byte
			if sealKeyFile != "" {
				if sealKey, err = ca.ReadSealKeyFile(sealKeyFile); err != nil {
					return fmt.Errorf("--seal-key-file: %w", err)
				}
			}
			if dataDir, err = filepath.Abs(dataDir); err != nil {
				return err
			}
			ctx := cmd.Context()
			srv, err := cluster.Join(ctx, cluster.JoinConfig{
				Join: join, Token: token, CAHash: caHash, Name: name, DataDir: dataDir,
				RaftAddr: raftAddr, APIAddr: apiAddr, RaftAdvertise: advertise, SealKey: sealKey, Options: opts,
			})
			clear(sealKey)
			if err != nil {
				return explainJoin(err)
			}
			return serve(ctx, srv, opts.Logger, func() error { return a.ready(srv, "joined") })
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&join, "join", "", "API address (host:port) of any running root server")
	fl.StringVar(&token, "token", "", "one-time root-join token")
	fl.StringVar(&caHash, "ca-hash", "", "CA hash of the network (sha256:..., printed by bootstrap)")
	fl.StringVar(&name, "name", "", "this server's name, unique in the network (e.g. r2)")
	fl.StringVar(&dataDir, "data-dir", "", "empty or new directory for this server's keys and Raft data")
	fl.StringVar(&raftAddr, "raft-addr", "", "host:port for Raft traffic (port 0 picks one)")
	fl.StringVar(&apiAddr, "api-addr", "", "host:port for the HTTPS API (port 0 picks one)")
	fl.StringVar(&advertise, "raft-advertise", "", "host:port other servers dial for Raft, when not --raft-addr (a proxy or NAT in front)")
	fl.StringVar(&sealKeyFile, "seal-key-file", "", "the network's seal key (64 hex digits, mode 0600); default: received in the pinned join exchange")
	sf.register(cmd, "info")
	sf.registerRTR(cmd)
	return cmd
}

// explainJoin adds what to do next to a refused join.
func explainJoin(err error) error {
	var ae *api.APIError
	if errors.As(err, &ae) {
		msg := fmt.Sprintf("join refused: %s (HTTP %d, %s)", ae.Message, ae.Status, ae.Code)
		if ae.Status == 401 || ae.Status == 403 {
			msg += "; make a fresh token with `keymesh root token` against a running server"
		}
		return errors.New(msg)
	}
	return err
}

func (a *app) startCmd() *cobra.Command {
	var (
		dataDir string
		sf      serveFlags
	)
	cmd := &cobra.Command{
		Use:   "start",
		Short: "Restart an existing root server from its data directory",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := require([2]string{"data-dir", dataDir}); err != nil {
				return err
			}
			opts, err := sf.options(a.stderr)
			if err != nil {
				return err
			}
			if dataDir, err = filepath.Abs(dataDir); err != nil {
				return err
			}
			ctx := cmd.Context()
			srv, err := cluster.Open(dataDir, opts)
			if err != nil {
				return err
			}
			return serve(ctx, srv, opts.Logger, func() error { return a.ready(srv, "started") })
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", "", "data directory of the server (made by bootstrap or join)")
	sf.register(cmd, "info")
	sf.registerRTR(cmd)
	return cmd
}

// ready prints the one line that says a server serves.
func (a *app) ready(srv *cluster.Server, verb string) error {
	info := infoOf(srv)
	return a.emit(info, func(w io.Writer) {
		rtrAt := ""
		if info.RTRAddr != "" {
			rtrAt = ", rtr " + info.RTRAddr
		}
		fmt.Fprintf(w, "root server %s of network %s %s: raft %s, api %s%s; serving until Ctrl-C\n",
			info.Name, info.Network, verb, info.RaftAddr, info.APIAddr, rtrAt)
	})
}
