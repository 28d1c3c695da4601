package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/spf13/cobra"

	"github.com/keymesh/keymesh/ca"
	"github.com/keymesh/keymesh/cluster/agent"
	"github.com/keymesh/keymesh/cluster/api"
	"github.com/keymesh/keymesh/cluster/run"
	"github.com/keymesh/keymesh/fsm"
	"github.com/keymesh/keymesh/identity"
	"github.com/keymesh/keymesh/session"
)

// How `keymesh node join` waits for an approval.
const (
	joinPollEvery = 2 * time.Second  // how often it asks the server
	joinShowTTY   = time.Second      // how often the in-place line is redrawn on a terminal
	joinShowPlain = 30 * time.Second // how often a plain line is printed otherwise
	resumeFlags   = "--data-dir, --network, --no-wait, --timeout"
)

func (a *app) nodeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "node",
		Short: "Run a node: register it, renew its certificate, rotate its key, run its agent",
	}
	groupCmd(cmd)
	cmd.AddCommand(a.nodeJoinCmd(), a.nodeRenewCmd(), a.nodeRotateKeyCmd(), a.nodeRunCmd(), a.nodeStatusCmd())
	return cmd
}

// joinFlags are the flags of `keymesh node join`.
type joinFlags struct {
	server, caHash, network, nodeID, dataDir, token, principal, keyType string
	dns                                                                 []string
	noWait, resume                                                      bool
	timeout                                                             time.Duration
}

// nodeJoinOutput is what `keymesh node join` prints.
type nodeJoinOutput struct {
	RegistrationID string    `json:"registration_id"`
	Status         string    `json:"status"` // pending, approved or denied
	NodeID         string    `json:"node_id"`
	Network        string    `json:"network"`
	Reason         string    `json:"reason,omitempty"`
	Serial         string    `json:"serial,omitempty"`
	NotAfter       time.Time `json:"not_after,omitzero"`
	DataDir        string    `json:"data_dir"`
	CertPath       string    `json:"cert_path,omitempty"`
	KeyPath        string    `json:"key_path,omitempty"`
	ApproveCommand string    `json:"approve_command,omitempty"`
	ResumeCommand  string    `json:"resume_command,omitempty"`
}

func (a *app) nodeJoinCmd() *cobra.Command {
	var f joinFlags
	cmd := &cobra.Command{
		Use:   "join",
		Short: "Register a new node and get its certificate",
		Long: `Register a new node with the root servers of a network. The node's key is made
here (node.key, mode 0600) and never leaves the data directory; the first
contact is pinned by the CA hash.

A data directory that holds a node of another network already keeps this
membership under networks/NETWORK in it: a key and certificate of its own,
run by the same "keymesh node run". A network that requires exclusive
membership ("keymesh network set-exclusive on") refuses that.

With a node join token (from "keymesh tokens create") the certificate comes
back at once. Without one the registration waits, pending, until an operator
runs "keymesh registrations approve ID" or denies it; the command shows that
it waits, or returns at once with --no-wait. A registration is collected
later, after a restart too, with "keymesh node join --resume --data-dir DIR",
which proves possession of the node key.`,
		Example: "  keymesh node join --server 10.0.0.1:8400 --ca-hash sha256:... --network mainnet.example.net \\\n" +
			"    --node-id edge-1 --data-dir /var/lib/keymesh/node --token kmjt....\n" +
			"  keymesh node join --resume --data-dir /var/lib/keymesh/node",
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := f.check(cmd)
			if err != nil {
				return err
			}
			return a.nodeJoin(cmd.Context(), f, cfg)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.server, "server", "", "API address (host:port) of any root server of the network")
	fl.StringVar(&f.caHash, "ca-hash", "", "CA hash of the network (sha256:..., printed by `keymesh root bootstrap` and `keymesh tokens create`)")
	fl.StringVar(&f.network, "network", "", "the network to join, e.g. mainnet.example.net")
	fl.StringVar(&f.nodeID, "node-id", "", "this node's id, unique in the network (e.g. edge-1)")
	fl.StringVar(&f.dataDir, "data-dir", "", "empty or new directory for the node's key and certificate")
	fl.StringVar(&f.token, "token", "", "node join token; without one the registration waits for an operator")
	fl.StringVar(&f.principal, "principal", "", "principal to ask for: "+strings.Join(principals, ", ")+" (default: the token's, else NODE)")
	fl.StringArrayVar(&f.dns, "dns", nil, "DNS name for the certificate (repeat for more)")
	fl.StringVar(&f.keyType, "key-type", string(ca.KeyP384), "node key type: p384, p256 or ed25519")
	fl.BoolVar(&f.noWait, "no-wait", false, "return at once when the registration is pending")
	fl.DurationVar(&f.timeout, "timeout", 0, "stop waiting for approval after this long (0: wait until approved or denied)")
	fl.BoolVar(&f.resume, "resume", false, "collect the registration kept in --data-dir (takes only "+resumeFlags+")")
	return cmd
}

// check validates the flags: usage errors, nothing touched.
func (f *joinFlags) check(cmd *cobra.Command) (agent.JoinConfig, error) {
	if f.timeout < 0 {
		return agent.JoinConfig{}, usagef("--timeout must not be negative, got %s (0 waits until approved or denied)", f.timeout)
	}
	if f.resume {
		for _, name := range []string{"server", "ca-hash", "node-id", "token", "principal", "dns", "key-type"} {
			if cmd.Flags().Changed(name) {
				return agent.JoinConfig{}, usagef("--resume collects the registration kept in --data-dir and takes only %s; drop --%s", resumeFlags, name)
			}
		}
		if f.dataDir == "" {
			return agent.JoinConfig{}, usagef("--resume needs --data-dir, the node's data directory")
		}
		return agent.JoinConfig{}, nil
	}
	if err := require([2]string{"server", f.server}, [2]string{"ca-hash", f.caHash}, [2]string{"network", f.network},
		[2]string{"node-id", f.nodeID}, [2]string{"data-dir", f.dataDir}); err != nil {
		return agent.JoinConfig{}, err
	}
	if err := checkServer(f.server); err != nil {
		return agent.JoinConfig{}, err
	}
	if _, err := ca.ParseHash(f.caHash); err != nil {
		return agent.JoinConfig{}, usagef("--ca-hash: %w", err)
	}
	if err := ca.ValidateNetwork(f.network); err != nil {
		return agent.JoinConfig{}, usagef("--network: %w", err)
	}
	if err := ca.ValidateNodeID(f.nodeID); err != nil {
		return agent.JoinConfig{}, usagef("--node-id: %w", err)
	}
	principal := strings.ToUpper(f.principal)
	if principal != "" && !contains(principals, principal) {
		return agent.JoinConfig{}, usagef("--principal must be one of %s, not %q", strings.Join(principals, ", "), f.principal)
	}
	for _, d := range f.dns {
		if err := ca.ValidateNetwork(d); err != nil {
			return agent.JoinConfig{}, usagef("--dns %q is not a DNS name: use a lower-case host name such as edge-1.example.net", d)
		}
	}
	kt, err := ca.ParseKeyType(strings.ToLower(f.keyType))
	if err != nil {
		return agent.JoinConfig{}, usagef("--key-type %q: use p384, p256 or ed25519", f.keyType)
	}
	return agent.JoinConfig{Server: f.server, CAHash: f.caHash, Network: f.network, NodeID: f.nodeID, Token: f.token,
		Principal: principal, DNSNames: f.dns, KeyType: kt}, nil
}

// checkServer checks the shape of --server: host:port with a port, or an
// https URL (the client checks the rest).
func checkServer(s string) error {
	if strings.Contains(s, "://") {
		return nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil || host == "" {
		return usagef("--server %q is not host:port (for example 10.0.0.1:8400)", s)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return usagef("--server %q has no valid port", s)
	}
	return nil
}

// nodeJoin registers (or, with --resume, collects) and then waits as the
// flags say.
func (a *app) nodeJoin(ctx context.Context, f joinFlags, cfg agent.JoinConfig) error {
	dir, err := filepath.Abs(f.dataDir)
	if err != nil {
		return err
	}
	var res agent.Result
	if f.resume {
		if f.network != "" {
			// A membership of another network, under networks/NETWORK.
			m, err := agent.FindMembership(dir, f.network)
			if err != nil {
				return err
			}
			dir = m.Dir
		}
		res, err = agent.Collect(ctx, dir, a.now)
		if errors.Is(err, agent.ErrPending) {
			err = nil
		}
	} else {
		cfg.DataDir, cfg.Clock = dir, a.now
		res, err = agent.Join(ctx, cfg)
	}
	switch {
	case errors.Is(err, agent.ErrNodeExists):
		resume := resumeCommand(dir)
		if st, err := agent.ReadState(dir); err == nil && st.Network != cfg.Network {
			resume += " --network " + cfg.Network // its membership of that network
		}
		return fmt.Errorf("%s already holds a node of network %s; collect its certificate with `%s`, or choose an empty or new --data-dir", dir, cfg.Network, resume)
	case errors.Is(err, agent.ErrTooManyMemberships):
		return fmt.Errorf("%w; run another node for more networks", err)
	case errors.Is(err, agent.ErrExclusive):
		return fmt.Errorf("%w; a node of it joins no other network (use another --data-dir for another node)", err)
	case errors.Is(err, agent.ErrDenied):
		return a.denied(res, dir)
	case err != nil:
		return explainNode("registration", err)
	}
	if res.Dir != "" {
		dir = res.Dir
	}
	if res.Status == fsm.RegistrationPending {
		if err := a.showPending(res, dir, f.noWait); err != nil || f.noWait {
			return err
		}
		if res, err = a.waitApproval(ctx, res, dir, f.timeout); err != nil {
			return err
		}
	}
	return a.joined(res, dir)
}

func resumeCommand(dir string) string {
	return "keymesh node join --resume --data-dir " + shellQuote(dir)
}

func approveCommand(id string) string {
	return "keymesh registrations approve " + shellQuote(id)
}

// outputOf is the printed form of a registration's state.
func outputOf(res agent.Result, dir string) nodeJoinOutput {
	out := nodeJoinOutput{RegistrationID: res.RegistrationID, Status: res.Status, NodeID: res.NodeID, Network: res.Network,
		Reason: res.Reason, DataDir: dir}
	switch res.Status {
	case fsm.RegistrationPending:
		out.ApproveCommand, out.ResumeCommand = approveCommand(res.RegistrationID), resumeCommand(dir)
	case fsm.RegistrationApproved:
		out.CertPath, out.KeyPath, out.NotAfter = agent.CertPath(dir), agent.KeyPath(dir), res.NotAfter.UTC()
		if certs, err := ca.ReadCertsFile(out.CertPath); err == nil {
			out.Serial, out.NotAfter = fsm.FormatSerial(certs[0].SerialNumber), certs[0].NotAfter.UTC()
		}
	}
	return out
}

// joined prints an approved registration.
func (a *app) joined(res agent.Result, dir string) error {
	out := outputOf(res, dir)
	return a.emit(out, func(w io.Writer) {
		fmt.Fprintf(w, "node %s of network %s joined: registration %s, certificate serial %s, valid until %s\n",
			out.NodeID, out.Network, out.RegistrationID, out.Serial, timeText(out.NotAfter))
		fmt.Fprintf(w, "  certificate  %s\n  key          %s\n", out.CertPath, out.KeyPath)
	})
}

// denied prints a denied registration (JSON only) and returns its error.
func (a *app) denied(res agent.Result, dir string) error {
	if a.output == "json" {
		if err := a.emit(outputOf(res, dir), nil); err != nil {
			return err
		}
	}
	reason := res.Reason
	if reason == "" {
		reason = "no reason given"
	}
	return fmt.Errorf("registration %s of node %s was denied: %s; to ask again, remove %s and run `keymesh node join` anew",
		res.RegistrationID, res.NodeID, reason, dir)
}

// showPending says that the registration waits and how an operator
// approves it. With --output json it prints the state only when the
// command returns at once.
func (a *app) showPending(res agent.Result, dir string, noWait bool) error {
	if a.output == "json" {
		if noWait {
			return a.emit(outputOf(res, dir), nil)
		}
		return nil
	}
	w := a.stdout
	fmt.Fprintf(w, "registration %s of node %s (network %s) is pending approval. An operator approves it with:\n\n  %s\n\n",
		res.RegistrationID, res.NodeID, res.Network, approveCommand(res.RegistrationID))
	if noWait {
		fmt.Fprintf(w, "Collect the certificate once it is approved with:\n\n  %s\n", resumeCommand(dir))
		return nil
	}
	fmt.Fprintf(w, "Waiting for approval; Ctrl-C stops waiting, and `%s` resumes.\n", resumeCommand(dir))
	return nil
}

// waitApproval collects the registration every joinPollEvery until it is
// approved or denied, showing the time it has waited. A server that cannot
// be reached or is busy is tried again; timeout 0 waits for ever.
func (a *app) waitApproval(parent context.Context, res agent.Result, dir string, timeout time.Duration) (agent.Result, error) {
	ctx, cancel := parent, context.CancelFunc(func() {})
	if timeout > 0 {
		ctx, cancel = context.WithTimeout(parent, timeout)
	}
	defer cancel()
	d := &waitDisplay{w: a.stdout, tty: isTerminal(a.stdout), quiet: a.output == "json", id: res.RegistrationID, since: res.Requested, now: a.now}
	if d.since.IsZero() {
		d.since = a.now()
	}
	every := joinShowPlain
	if d.tty {
		every = joinShowTTY
	}
	poll, show := time.NewTicker(joinPollEvery), time.NewTicker(every)
	defer poll.Stop()
	defer show.Stop()
	d.show()
	for {
		select {
		case <-ctx.Done():
			d.end()
			if a.output == "json" {
				a.emit(outputOf(res, dir), nil)
			}
			why := fmt.Sprintf("still pending after waiting %s", timeout)
			if parent.Err() != nil {
				why = "still pending; stopped waiting"
			}
			return res, fmt.Errorf("registration %s of node %s is %s; collect the certificate later with `%s`",
				res.RegistrationID, res.NodeID, why, resumeCommand(dir))
		case <-show.C:
			d.show()
		case <-poll.C:
			r, err := agent.Collect(ctx, dir, a.now)
			switch {
			case errors.Is(err, agent.ErrPending):
				res = r
				d.note("")
			case ctx.Err() != nil:
				// The deadline or a signal came during the call.
			case err == nil:
				d.end()
				if !d.quiet {
					fmt.Fprintf(d.w, "approved after %s.\n", d.elapsed())
				}
				return r, nil
			case errors.Is(err, agent.ErrDenied):
				d.end()
				return r, a.denied(r, dir)
			case transient(err):
				d.note(fmt.Sprintf("%v; trying again", explainNode("collection", err)))
			default:
				d.end()
				return r, explainNode("collection", err)
			}
		}
	}
}

// transient reports whether a failed collection is worth trying again: the
// server was unreachable, busy or without a leader.
func transient(err error) bool {
	var ae *api.APIError
	if errors.As(err, &ae) {
		return ae.Status == http.StatusTooManyRequests || ae.Status >= 500
	}
	var ne net.Error
	return errors.As(err, &ne)
}

// waitDisplay shows how long a registration has waited: one line redrawn
// in place on a terminal, plain lines otherwise.
type waitDisplay struct {
	w     io.Writer
	tty   bool
	quiet bool // --output json: nothing but the final object
	id    string
	since time.Time
	now   func() time.Time
	open  bool   // an in-place line is on the screen
	last  string // the last note shown
}

func (d *waitDisplay) elapsed() time.Duration {
	return max(d.now().Sub(d.since), 0).Round(time.Second)
}

func (d *waitDisplay) show() {
	if d.quiet {
		return
	}
	line := fmt.Sprintf("waiting for approval of %s: %s elapsed", d.id, d.elapsed())
	if d.tty {
		fmt.Fprintf(d.w, "\r%s ", line)
		d.open = true
		return
	}
	fmt.Fprintln(d.w, line)
}

// note shows msg once, on its own line; "" clears it so that the next
// problem is shown again.
func (d *waitDisplay) note(msg string) {
	if msg == d.last || d.quiet {
		d.last = msg
		return
	}
	d.last = msg
	if msg == "" {
		return
	}
	d.end()
	fmt.Fprintln(d.w, oneLine(msg))
}

// end finishes an in-place line.
func (d *waitDisplay) end() {
	if d.open {
		fmt.Fprintln(d.w)
		d.open = false
	}
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// explainNode turns an error of the node side into one line that says what
// happened; what names the call ("registration", "renewal").
func explainNode(what string, err error) error {
	var (
		ae *api.APIError
		ue *url.Error
	)
	switch {
	case errors.As(err, &ae):
		return fmt.Errorf("%s refused: %s (HTTP %d, %s)", what, ae.Message, ae.Status, ae.Code)
	case errors.Is(err, syscall.ECONNREFUSED) && errors.As(err, &ue):
		return fmt.Errorf("cannot reach %s: connection refused; is a root server running there?", hostOf(ue.URL))
	case errors.Is(err, context.DeadlineExceeded) && errors.As(err, &ue):
		return fmt.Errorf("%s did not answer in time; check that it runs and that the cluster has a leader", hostOf(ue.URL))
	}
	return err
}

// hostOf is the host:port of a URL, or the URL when it does not parse.
func hostOf(raw string) string {
	if u, err := url.Parse(raw); err == nil && u.Host != "" {
		return u.Host
	}
	return raw
}

// nodeCertOutput is what renew prints, and run once it runs.
type nodeCertOutput struct {
	NodeID    string    `json:"node_id"`
	Network   string    `json:"network"`
	Serial    string    `json:"serial"`
	NotBefore time.Time `json:"not_before"`
	NotAfter  time.Time `json:"not_after"`
	RenewAt   time.Time `json:"renew_at"`
	CertPath  string    `json:"cert_path"`
}

func certOutput(dir string, cert *x509.Certificate) nodeCertOutput {
	out := nodeCertOutput{Serial: fsm.FormatSerial(cert.SerialNumber), NotBefore: cert.NotBefore.UTC(), NotAfter: cert.NotAfter.UTC(),
		RenewAt: agent.RenewAt(cert).UTC(), CertPath: agent.CertPath(dir)}
	if id, err := ca.IdentityOf(cert); err == nil {
		out.NodeID, out.Network = id.Name, id.Network
	}
	return out
}

func (a *app) nodeRenewCmd() *cobra.Command {
	var dataDir string
	cmd := &cobra.Command{
		Use:   "renew",
		Short: "Renew the node's certificate now (over mutual TLS with the current one)",
		Long: `Renew the node's certificate now, for the same key, over mutual TLS with the
current certificate. The old certificate stays valid until it expires. A
revoked node cannot renew. "keymesh node run" renews on its own at two thirds
of the lifetime.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := require([2]string{"data-dir", dataDir}); err != nil {
				return err
			}
			dir, err := filepath.Abs(dataDir)
			if err != nil {
				return err
			}
			cert, err := agent.Renew(cmd.Context(), dir)
			if err != nil {
				return explainNode("renewal", err)
			}
			out := certOutput(dir, cert)
			return a.emit(out, func(w io.Writer) {
				fmt.Fprintf(w, "renewed the certificate of node %s: serial %s, valid until %s (renew again after %s)\n",
					out.NodeID, out.Serial, timeText(out.NotAfter), timeText(out.RenewAt))
			})
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", "", "the node's data directory (made by `keymesh node join`)")
	return cmd
}

// nodeRunOutput is what `keymesh node run` prints once its agent listens.
type nodeRunOutput struct {
	nodeCertOutput
	Socket string `json:"socket"`
	TCP    string `json:"tcp,omitempty"`
	// Listen is where the agent takes peering sessions; Peers how many it
	// dials.
	Listen string `json:"listen,omitempty"`
	Peers  int    `json:"peers,omitempty"`
	// Gossip is where the agent gossips, if it does.
	Gossip string `json:"gossip,omitempty"`
	// RTR is where the agent serves RTR to routers, if it does.
	RTR string `json:"rtr,omitempty"`
	// Memberships are the node's memberships of other networks.
	Memberships []membershipOutput `json:"memberships,omitempty"`
}

// nodeRunFlags are the flags of `keymesh node run`.
type nodeRunFlags struct {
	dataDir, logLevel, apiListen, listen, peersFile string
	gossipAddr, gossipAdvertise, rtrListen          string
	peers, gossipJoin, servers, acceptNetworks      []string
	pinServers                                      bool
	linger, hold                                    time.Duration
}

func (a *app) nodeRunCmd() *cobra.Command {
	var f nodeRunFlags
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the node agent in the foreground: renewal, trust state, local API, peering sessions",
		Long: `Run the node agent in the foreground until SIGINT or SIGTERM. It

  - renews the node certificate at two thirds of its lifetime, retrying
    failures with capped exponential backoff;
  - follows the trust state of the root servers (JWKS, revocations, anchors)
    with blocking queries, and keeps it in trust.json so that a restarted
    agent verifies at once, offline;
  - serves a local API on the unix socket agent.sock in the data directory
    (mint, verify, peers, metrics, /.well-known/jwks.json), used by
    "keymesh token mint", "keymesh token verify" and "keymesh peers";
    --api-listen serves it on loopback TCP too, without minting;
  - runs peering sessions: --listen takes them, --peer and --peers dial
    peers. A session is mutual TLS 1.3 with the node certificates, then an
    OPEN whose token is bound to the certificate, then Cedar peer.connect;
    a peer the trust state revokes loses its sessions at once;
  - gossips with --gossip-addr (UDP and TCP, encrypted with the network's
    gossip key, which the roots hand the node over mutual TLS): the node
    graph of authenticated members ("keymesh members list"), the peering
    address of a peer given by node id alone, failure detection (a dead
    member's session ends), and the roots' signed revocation bulletins,
    applied at once, also where no root is in reach. --gossip-join names
    members to join (repeatable).

A node that is a member of several networks ("keymesh node join" into the
same data directory, under networks/NETWORK) runs them all: each with its
certificate, key, trust state and local API (agent.sock in its directory;
commands take --network to choose it). --listen is shared: each connection
goes to the membership of the network its TLS server name names, and a node
dialled presents the certificate of a network the peer accepts. A peer given
by a SPIFFE ID of one of the other networks is that membership's; gossip,
--api-listen, --rtr-listen and --accept-network are the first network's. A
network that requires exclusive membership ("keymesh network set-exclusive
on") refuses its node's other memberships.

--accept-network narrows the networks whose members this node accepts (its
own always) below its network's access list ("keymesh trust list"), at every
layer: sessions, gossip, routes, tokens. A network the list does not hold
stays refused.

A peer is NODEID@HOST:PORT[,role=ROLE][,psk=FILE] (a node of a federated
network: its SPIFFE ID, spiffe://NETWORK/node/NODEID, for NODEID): ROLE is what the peer is
to this node (internal, the default, peer, provider or customer), FILE a
pre-shared key (hex, mode 0600) both sides hold. A peers file has one peer a
line, # comments; NODEID alone (with options) takes that peer's sessions
without dialling it, or, with gossip, dials the address its membership
proof names.

It stops with an error when the node is revoked or its certificate expired
before a renewal succeeded. Once the trust state (or a root server refusing
it) says that the node, its certificate or its key is revoked, every call on
the socket answers node_revoked saying why, for --revoked-linger, and then
the agent exits.`,
		Example: "  keymesh node run --data-dir /var/lib/keymesh/edge-1 --listen 10.0.0.21:1790 \\\n" +
			"    --peer core-1@10.0.0.11:1790,role=provider --peers /etc/keymesh/peers",
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := require([2]string{"data-dir", f.dataDir}); err != nil {
				return err
			}
			level, err := parseLevel(f.logLevel)
			if err != nil {
				return err
			}
			if f.pinServers && len(f.servers) == 0 {
				return usagef("--pin-servers needs the root servers to pin (--server HOST:PORT, repeatable)")
			}
			for _, s := range f.servers {
				if err := checkAddr("server", s); err != nil {
					return err
				}
			}
			if len(f.gossipJoin) > 0 && f.gossipAddr == "" {
				return usagef("--gossip-join needs --gossip-addr (where this node gossips)")
			}
			for _, j := range f.gossipJoin {
				if err := checkAddr("gossip-join", j); err != nil {
					return err
				}
			}
			for _, n := range f.acceptNetworks {
				if err := ca.ValidateNetwork(n); err != nil {
					return usagef("--accept-network: %v", err)
				}
			}
			for _, l := range [][2]string{{"api-listen", f.apiListen}, {"listen", f.listen}, {"gossip-addr", f.gossipAddr}, {"gossip-advertise", f.gossipAdvertise}, {"rtr-listen", f.rtrListen}} {
				if l[1] != "" {
					if err := checkAddr(l[0], l[1]); err != nil {
						return err
					}
				}
			}
			dir, err := filepath.Abs(f.dataDir)
			if err != nil {
				return err
			}
			if f.linger < 0 {
				return usagef("--revoked-linger must not be negative, got %s", f.linger)
			}
			if f.hold != 0 {
				if err := session.ValidHoldTime(f.hold); err != nil {
					return usagef("--hold-time: %v", err)
				}
			}
			peers, err := peersOf(f.peers, f.peersFile)
			if err != nil {
				return err
			}
			return a.runNode(cmd.Context(), dir, level, f, peers)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.dataDir, "data-dir", "", "the node's data directory (made by `keymesh node join`)")
	fl.StringVar(&f.apiListen, "api-listen", "", "loopback host:port for the local API besides the socket (verify, JWKS, peers, metrics; no minting)")
	fl.StringVar(&f.listen, "listen", "", "host:port where the agent takes peering sessions (port 0 picks one)")
	fl.StringArrayVar(&f.peers, "peer", nil, "a peer to dial: NODEID@HOST:PORT[,role=ROLE][,psk=FILE] (repeatable)")
	fl.StringVar(&f.peersFile, "peers", "", "a file of peers, one NODEID@HOST:PORT[,role=ROLE][,psk=FILE] a line")
	fl.StringArrayVar(&f.servers, "server", nil, "a root server API address to follow besides node.json's, host:port (repeatable)")
	fl.BoolVar(&f.pinServers, "pin-servers", false, "follow the --server addresses alone, not those the trust state lists (a site that reaches the roots through a relay)")
	fl.StringVar(&f.gossipAddr, "gossip-addr", "", "host:port where the agent gossips, UDP and TCP (an IP others reach, or set --gossip-advertise)")
	fl.StringVar(&f.gossipAdvertise, "gossip-advertise", "", "ip:port others reach this node's gossip at, if not --gossip-addr")
	fl.StringArrayVar(&f.gossipJoin, "gossip-join", nil, "a member to join at start, host:port (repeatable)")
	fl.StringVar(&f.rtrListen, "rtr-listen", "", "host:port where a router beside this node gets the network's route authorizations over RTR, plain TCP for loopback or a trusted network (port 0 picks one)")
	fl.StringArrayVar(&f.acceptNetworks, "accept-network", nil, "accept members of this network only (besides the node's own; repeatable): narrows the network's access list, never widens it")
	fl.DurationVar(&f.hold, "hold-time", 0, "hold time the agent proposes: 0s or 3s and more (0: default 30s)")
	fl.StringVar(&f.logLevel, "log-level", "info", "log level on stderr: trace, debug, info, warn or error")
	fl.DurationVar(&f.linger, "revoked-linger", 0, "how long a revoked agent tells its local clients why before it exits (0: default 10s)")
	return cmd
}

// peersOf parses --peer flags and a --peers file into one list.
func peersOf(flags []string, file string) ([]session.PeerConfig, error) {
	var out []session.PeerConfig
	seen := map[string]string{}
	add := func(p session.PeerConfig, where string) error {
		if first, ok := seen[p.ID]; ok {
			return usagef("peer %s is given twice (%s and %s)", p.ID, first, where)
		}
		seen[p.ID] = where
		out = append(out, p)
		return nil
	}
	for _, spec := range flags {
		p, err := session.ParsePeer(spec, "")
		if err != nil {
			return nil, usagef("--peer: %v", err)
		}
		if err := add(p, "--peer "+spec); err != nil {
			return nil, err
		}
	}
	if file != "" {
		fh, err := os.Open(file)
		if err != nil {
			return nil, usagef("--peers: %v", err)
		}
		defer fh.Close()
		list, err := session.ParsePeersFile(fh, file)
		if err != nil {
			return nil, usagef("--peers: %v", err)
		}
		for _, p := range list {
			if err := add(p, file); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// runNode runs the agent of the node in dir with its Renewer until ctx
// ends: one of each for every network the node is a member of (its
// first, and each under networks/NETWORK), sharing --listen.
func (a *app) runNode(ctx context.Context, dir string, level hclog.Level, f nodeRunFlags, peers []session.PeerConfig) error {
	log := hclog.New(&hclog.LoggerOptions{Name: "keymesh.node", Level: level, Output: a.stderr})
	first, others, err := runnableMemberships(dir, log)
	if err != nil {
		return err
	}
	rc := agent.RenewerConfig{DataDir: dir, Clock: a.now, Logger: log.Named("renewer")}
	if f.pinServers {
		// Renewals go where the trust state comes from: the pinned servers,
		// the next one after a failure.
		var next atomic.Int64
		rc.Renew = func(ctx context.Context, dir string) (*x509.Certificate, error) {
			i := next.Load()
			c, err := agent.RenewVia(ctx, dir, f.servers[int(i)%len(f.servers)])
			if err != nil {
				next.CompareAndSwap(i, i+1)
			}
			return c, err
		}
	}
	r, err := agent.NewRenewer(rc)
	if err != nil {
		return err
	}
	cert, err := r.Current()
	if err != nil {
		return err
	}
	out := nodeRunOutput{nodeCertOutput: certOutput(dir, cert), Socket: agent.SocketPath(dir)}
	if agentAnswers(ctx, dir) {
		return fmt.Errorf("node %s already has a running agent (%s answers); stop it first", out.NodeID, out.Socket)
	}
	// The other memberships that can run: a certificate, no agent of
	// theirs running, and no requirement of exclusive membership; one that
	// cannot is left out (logged), the others run.
	type member struct {
		agent.Membership
		r    *agent.Renewer
		cert *x509.Certificate
	}
	var members []member
	for _, m := range others {
		mlog := log.With("network", m.Network)
		mr, err := agent.NewRenewer(agent.RenewerConfig{DataDir: m.Dir, Clock: a.now, Logger: mlog.Named("renewer")})
		var mcert *x509.Certificate
		if err == nil {
			mcert, err = mr.Current()
		}
		switch {
		case err != nil:
			mlog.Error("this membership does not run", "error", err)
			continue
		case agentAnswers(ctx, m.Dir):
			mlog.Error("this membership does not run: another agent runs it", "socket", agent.SocketPath(m.Dir))
			continue
		case m.Exclusive():
			mlog.Error("this membership does not run: its network requires exclusive membership; move it to a node and data directory of its own", "dir", m.Dir)
			continue
		}
		members = append(members, member{Membership: m, r: mr, cert: mcert})
	}
	var networks []string
	var running []agent.Membership
	for _, m := range members {
		networks = append(networks, m.Network)
		running = append(running, m.Membership)
	}
	peersOf := splitPeers(peers, first, running)
	var g run.Group
	// A node of several networks takes the sessions of all on --listen:
	// the Mux hands each connection to its network's speaker.
	listen := map[string]net.Listener{}
	var listenAddr string
	if f.listen != "" && len(members) > 0 {
		ln, err := net.Listen("tcp", f.listen)
		if err != nil {
			return fmt.Errorf("peering sessions on %s: %w (is another agent using it?)", f.listen, err)
		}
		started := false
		defer func() {
			if !started {
				ln.Close()
			}
		}()
		mux := session.NewMux(ln, session.MuxConfig{Default: first.Network, Logger: log.Named("mux")})
		for _, n := range append([]string{first.Network}, networks...) {
			listen[n] = mux.Listener(n)
		}
		listenAddr = ln.Addr().String()
		g.Add("session listener", run.Func(func(ctx context.Context) error { started = true; return mux.Run(ctx) }))
	}
	firstCfg := agent.RunConfig{DataDir: dir, Logger: log, Clock: a.now, ListenTCP: f.apiListen, RevokedLinger: f.linger,
		Listen: f.listen, Peers: peersOf[first.Network], HoldTime: f.hold, Memberships: networks,
		GossipAddr: f.gossipAddr, GossipAdvertise: f.gossipAdvertise, GossipJoin: f.gossipJoin,
		Servers: f.servers, PinServers: f.pinServers, AcceptNetworks: f.acceptNetworks, RTRListen: f.rtrListen}
	if ln := listen[first.Network]; ln != nil {
		firstCfg.Listen, firstCfg.SessionListener = "", ln
	}
	ag, err := agent.New(firstCfg)
	switch {
	case errors.Is(err, agent.ErrNotLoopback):
		return usagef("--api-listen %q: the local API listens on loopback addresses only (127.0.0.1, ::1)", f.apiListen)
	case err != nil:
		return err
	}
	out.Peers = len(peersOf[first.Network])
	g.Add("agent", ag)
	g.Add("renewer", r)
	agents := []*agent.Agent{ag}
	for _, m := range members {
		mlog := log.With("network", m.Network)
		var rest []string
		for _, n := range append([]string{first.Network}, networks...) {
			if n != m.Network {
				rest = append(rest, n)
			}
		}
		slices.Sort(rest)
		// --accept-network narrows the first network's access list alone:
		// the names are of that network's list.
		mag, err := agent.New(agent.RunConfig{DataDir: m.Dir, Logger: mlog, Clock: a.now, RevokedLinger: f.linger,
			SessionListener: listen[m.Network], Peers: peersOf[m.Network], HoldTime: f.hold, Memberships: rest})
		if err != nil {
			mlog.Error("this membership does not run", "error", err)
			continue
		}
		agents = append(agents, mag)
		mo := membershipOutput{nodeCertOutput: certOutput(m.Dir, m.cert), Socket: agent.SocketPath(m.Dir), Peers: len(peersOf[m.Network])}
		out.Memberships = append(out.Memberships, mo)
		g.Add("membership of "+m.Network, membershipRun(mlog, m.Membership, mag, m.r))
	}
	g.Add("announce", run.Func(func(ctx context.Context) error {
		for _, m := range agents {
			select {
			case <-ctx.Done():
				return nil
			case <-m.Ready():
			}
		}
		if addr := ag.TCPAddr(); addr != nil {
			out.TCP = addr.String()
		}
		out.Listen = ag.SessionAddr()
		if listenAddr != "" {
			out.Listen = listenAddr
		}
		out.Gossip = f.gossipAddr
		if addr := ag.RTRAddr(); addr != nil {
			out.RTR = addr.String()
		}
		for i := range out.Memberships {
			out.Memberships[i].Listen = out.Listen
		}
		return a.emit(out, func(w io.Writer) {
			fmt.Fprintf(w, "node %s of network %s running: certificate serial %s valid until %s, renewal at %s; local API on %s",
				out.NodeID, out.Network, out.Serial, timeText(out.NotAfter), timeText(out.RenewAt), out.Socket)
			if out.TCP != "" {
				fmt.Fprintf(w, " and %s", out.TCP)
			}
			if out.Listen != "" {
				fmt.Fprintf(w, "; peering sessions on %s", out.Listen)
			}
			if out.Peers > 0 {
				fmt.Fprintf(w, "; dialling %d peers", out.Peers)
			}
			if out.Gossip != "" {
				fmt.Fprintf(w, "; gossiping on %s", out.Gossip)
			}
			if out.RTR != "" {
				fmt.Fprintf(w, "; RTR for routers on %s", out.RTR)
			}
			fmt.Fprintln(w, "; until Ctrl-C")
			for _, m := range out.Memberships {
				fmt.Fprintf(w, "  also node %s of network %s: certificate serial %s valid until %s; local API on %s\n",
					m.NodeID, m.Network, m.Serial, timeText(m.NotAfter), m.Socket)
			}
		})
	}))
	err = g.Run(ctx)
	var re *run.Error
	if errors.As(err, &re) {
		err = re.Err // the part is in the messages below
	}
	switch {
	case errors.Is(err, agent.ErrRevoked):
		return fmt.Errorf("node %s is revoked, the agent stopped (%v); register it again under a new node id", out.NodeID, err)
	case errors.Is(err, agent.ErrExpired):
		return fmt.Errorf("node %s: %w; register the node again", out.NodeID, err)
	case errors.Is(err, agent.ErrAgentRunning):
		return fmt.Errorf("node %s already has a running agent (%s answers); stop it first", out.NodeID, out.Socket)
	case err != nil:
		return explainNode("renewal", err)
	}
	log.Info("stopped")
	return nil
}

// membershipOutput is a membership of another network in what `keymesh
// node run` prints.
type membershipOutput struct {
	nodeCertOutput
	Socket string `json:"socket"`
	Listen string `json:"listen,omitempty"`
	Peers  int    `json:"peers,omitempty"`
}

// runnableMemberships are the node's first membership and its other
// approved ones; one not approved yet is left out, saying how to finish
// it.
func runnableMemberships(dir string, log hclog.Logger) (agent.Membership, []agent.Membership, error) {
	ms, err := agent.Memberships(dir)
	if err != nil {
		return agent.Membership{}, nil, err
	}
	var others []agent.Membership
	for _, m := range ms[1:] {
		if m.Status != fsm.RegistrationApproved {
			log.Warn("a membership is not approved; it does not run", "network", m.Network, "status", m.Status,
				"resume", "keymesh node join --resume --data-dir "+shellQuote(dir)+" --network "+m.Network)
			continue
		}
		others = append(others, m)
	}
	return ms[0], others, nil
}

// splitPeers gives each membership its peers: a peer named by a SPIFFE ID
// of one of the node's networks is that membership's (by node id); one of
// another network goes to the first membership whose access list (as its
// agent last kept it) accepts that network, else to the first; a node id
// alone is the first's.
func splitPeers(peers []session.PeerConfig, first agent.Membership, others []agent.Membership) map[string][]session.PeerConfig {
	out := map[string][]session.PeerConfig{}
	all := append([]agent.Membership{first}, others...)
	for _, p := range peers {
		id, err := identity.ParseSPIFFEID(p.ID)
		if err != nil || id.Kind != identity.KindNode || len(others) == 0 {
			out[first.Network] = append(out[first.Network], p)
			continue
		}
		if i := slices.IndexFunc(all, func(m agent.Membership) bool { return m.Network == id.Network }); i >= 0 {
			if i > 0 {
				p.ID = id.Name
			}
			out[id.Network] = append(out[id.Network], p)
			continue
		}
		to := first.Network
		if i := slices.IndexFunc(all, func(m agent.Membership) bool { return m.Accepts(id.Network) }); i >= 0 {
			to = all[i].Network
		}
		out[to] = append(out[to], p)
	}
	return out
}

// membershipRun runs the agent and renewer of a membership of another
// network: its revocation or expiry ends that membership alone.
func membershipRun(log hclog.Logger, m agent.Membership, ag *agent.Agent, r *agent.Renewer) run.Component {
	return run.Func(func(ctx context.Context) error {
		var g run.Group
		g.Add("agent", ag)
		g.Add("renewer", r)
		err := g.Run(ctx)
		if errors.Is(err, agent.ErrRevoked) || errors.Is(err, agent.ErrExpired) {
			log.Error("this membership stopped; the node's others go on", "network", m.Network, "error", err)
			return nil
		}
		return err
	})
}

// rotateOutput is what `keymesh node rotate-key` prints.
type rotateOutput struct {
	NodeID    string    `json:"node_id"`
	Network   string    `json:"network"`
	OldKID    string    `json:"old_kid"`
	NewKID    string    `json:"new_kid"`
	KeyType   string    `json:"key_type"`
	Serial    string    `json:"serial"`
	NotAfter  time.Time `json:"not_after"`
	CertPath  string    `json:"cert_path"`
	KeyPath   string    `json:"key_path"`
	OldSerial string    `json:"old_serial"`
}

func (a *app) nodeRotateKeyCmd() *cobra.Command {
	var dataDir, keyType string
	cmd := &cobra.Command{
		Use:   "rotate-key",
		Short: "Give the node a new key and certificate; the old key keeps verifying what it signed",
		Long: `Give the node a new key (made here, never sent) and a certificate for it, over
mutual TLS with the current certificate. The new key's kid signs from then
on; the old kid stays in the JWKS as retiring, so the tokens it signed before
the rotation keep verifying until they expire. A running agent picks the new
key up by itself.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := require([2]string{"data-dir", dataDir}); err != nil {
				return err
			}
			var kt ca.KeyType
			if keyType != "" {
				var err error
				if kt, err = ca.ParseKeyType(strings.ToLower(keyType)); err != nil {
					return usagef("--key-type %q: use p384, p256 or ed25519", keyType)
				}
			}
			dir, err := filepath.Abs(dataDir)
			if err != nil {
				return err
			}
			if _, err := agent.ReadState(dir); err != nil {
				return nodeDirError(dir, err)
			}
			old, err := agent.Certificate(dir)
			if err != nil {
				return err
			}
			oldKID, err := identity.Thumbprint(old.Leaf.PublicKey)
			if err != nil {
				return err
			}
			cert, err := agent.RotateKey(cmd.Context(), dir, kt)
			if err != nil {
				return explainNode("key rotation", err)
			}
			newKID, err := identity.Thumbprint(cert.PublicKey)
			if err != nil {
				return err
			}
			got, _ := ca.KeyTypeOf(cert.PublicKey)
			c := certOutput(dir, cert)
			out := rotateOutput{NodeID: c.NodeID, Network: c.Network, OldKID: oldKID, NewKID: newKID, KeyType: string(got),
				Serial: c.Serial, NotAfter: c.NotAfter, CertPath: c.CertPath, KeyPath: agent.KeyPath(dir),
				OldSerial: fsm.FormatSerial(old.Leaf.SerialNumber)}
			return a.emit(out, func(w io.Writer) {
				fmt.Fprintf(w, "rotated the key of node %s: kid %s -> %s (%s), certificate serial %s valid until %s\n",
					out.NodeID, out.OldKID, out.NewKID, out.KeyType, out.Serial, timeText(out.NotAfter))
				fmt.Fprintf(w, "The old kid keeps verifying the tokens it signed until they expire.\n")
			})
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", "", "the node's data directory (made by `keymesh node join`)")
	cmd.Flags().StringVar(&keyType, "key-type", "", "new key type: p384, p256 or ed25519 (default: the current key's)")
	return cmd
}

// agentAnswers reports whether an agent serves the socket in dir.
func agentAnswers(ctx context.Context, dir string) bool {
	if !agentSocketExists(dir) {
		return false
	}
	lc := agent.NewLocalClient(agent.SocketPath(dir))
	defer lc.Close()
	ctx, cancel := context.WithTimeout(ctx, agentCallTimeout)
	defer cancel()
	_, err := lc.Status(ctx)
	return err == nil
}

func (a *app) nodeStatusCmd() *cobra.Command {
	var dataDir string
	cmd := &cobra.Command{
		Use:   "status --data-dir D",
		Short: "Show a running agent: its key and certificate, the trust state it follows, its sessions, and its route key's stage",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var st agent.StatusResponse
			if err := withAgent(cmd, dataDir, "show its status", func(ctx context.Context, lc *agent.LocalClient) error {
				var err error
				st, err = lc.Status(ctx)
				return err
			}); err != nil {
				return err
			}
			return a.emit(st, func(w io.Writer) {
				fmt.Fprintf(w, "node %s of network %s: key %s, certificate %s valid until %s\n", st.Node, st.Network, st.KID, st.CertSerial, timeText(st.CertNotAfter))
				contact := "never since start"
				if !st.Trust.LastContact.IsZero() {
					contact = timeText(st.Trust.LastContact)
				}
				fmt.Fprintf(w, "trust state at index %d (on disk %d) from %s, last answer %s, %d failures since\n",
					st.Trust.Index, st.Trust.Persisted, st.Trust.Server, contact, st.Trust.Failures)
				fmt.Fprintf(w, "accepts members of %s\n", strings.Join(st.Accepted, ", "))
				if st.Routes == nil {
					fmt.Fprintln(w, "no peering sessions")
					return
				}
				fmt.Fprintf(w, "%d sessions established; routes: %d of its own, %d best\n", st.Sessions, st.Routes.Routes, st.Routes.Best)
				switch {
				case st.Routes.Staged != "" && !st.Routes.UseAt.IsZero():
					fmt.Fprintf(w, "route key: %s in use; new key %s staged since %s, routes signed with it from %s\n",
						st.Routes.KID, st.Routes.Staged, timeText(st.Routes.StagedSince), timeText(st.Routes.UseAt))
				case st.Routes.Staged != "":
					fmt.Fprintf(w, "route key: %s in use; new key %s waits to appear in the trust state\n", st.Routes.KID, st.Routes.Staged)
				default:
					fmt.Fprintf(w, "route key: %s in use (the node key)\n", st.Routes.KID)
				}
			})
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", "", "the node's data directory (its agent must run)")
	networkFlag(cmd)
	return cmd
}
