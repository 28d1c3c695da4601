package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/keymesh/keymesh/cluster/api"
)

// peerStatusTimeout bounds the status call to each listed server, so that a
// dead server does not stall `root status`.
const peerStatusTimeout = 5 * time.Second

// createdToken is what token creation prints.
type createdToken struct {
	api.CreatedJoinToken
	CAHash      string `json:"ca_hash"`
	JoinCommand string `json:"join_command"`
}

func (a *app) rootTokenCmd() *cobra.Command {
	var (
		cf   connFlags
		ttl  time.Duration
		desc string
	)
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Make a one-time root-join token for the next root server",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if ttl < 0 {
				return usagef("--ttl must be positive, got %s", ttl)
			}
			return a.createToken(cmd.Context(), cf, api.CreateJoinTokenRequest{Kind: "root", TTL: durationText(ttl), Description: desc})
		},
	}
	cf.register(cmd)
	cmd.Flags().DurationVar(&ttl, "ttl", 0, "how long the token stays valid (default 24h, at most 720h)")
	cmd.Flags().StringVar(&desc, "description", "", "note kept with the token")
	return cmd
}

func durationText(d time.Duration) string {
	if d == 0 {
		return ""
	}
	return d.String()
}

// createToken makes a join token and prints its secret once, with the
// command that uses it.
func (a *app) createToken(ctx context.Context, cf connFlags, req api.CreateJoinTokenRequest) error {
	cl, c, err := a.client(cf)
	if err != nil {
		return err
	}
	defer cl.Close()
	hash, err := c.caHash()
	if err != nil {
		return err
	}
	tok, err := cl.CreateJoinToken(ctx, req)
	if err != nil {
		return c.explain(err)
	}
	out := createdToken{CreatedJoinToken: tok, CAHash: hash}
	if tok.Kind == "root" {
		out.JoinCommand = joinCommand(hostPort(c.server), tok.Secret, hash, "<NAME>")
	} else {
		network := "<NETWORK>"
		if h, err := cl.Health(ctx); err == nil && h.Network != "" {
			network = h.Network
		}
		nodeID := "<NODE-ID>"
		if tok.NodeID != "" {
			nodeID = shellQuote(tok.NodeID)
		}
		out.JoinCommand = fmt.Sprintf("keymesh node join --server %s --ca-hash %s --network %s --node-id %s --data-dir <DIR> --token %s",
			shellQuote(hostPort(c.server)), shellQuote(hash), shellQuote(network), nodeID, shellQuote(tok.Secret))
	}
	return a.emit(out, func(w io.Writer) {
		var scope []string
		if tok.Principal != "" {
			scope = append(scope, "principal "+tok.Principal)
		}
		if tok.NodeID != "" {
			scope = append(scope, "node "+tok.NodeID)
		}
		what := ""
		if len(scope) > 0 {
			what = " (" + strings.Join(scope, ", ") + ")"
		}
		fmt.Fprintf(w, "Made %s join token %s%s: %s, expires %s.\n", tok.Kind, tok.ID, what, usesText(tok.Uses), timeText(tok.Expiry))
		fmt.Fprintf(w, "Secret (shown only now):\n\n  %s\n\n", tok.Secret)
		if tok.Kind == "root" {
			fmt.Fprintf(w, "Join a new root server with:\n\n  %s\n", out.JoinCommand)
		} else {
			fmt.Fprintf(w, "A node joins with:\n\n  %s\n", out.JoinCommand)
		}
	})
}

func usesText(n int) string {
	if n == 1 {
		return "one use"
	}
	return strconv.Itoa(n) + " uses"
}

// serverRow is one line of `root status`: a server as it sees itself.
type serverRow struct {
	Name         string `json:"name"`
	APIAddr      string `json:"api_addr"`
	RaftAddr     string `json:"raft_addr"`
	Suffrage     string `json:"suffrage"`
	State        string `json:"state,omitempty"`
	Leader       bool   `json:"leader"`
	Term         uint64 `json:"term"`
	CommitIndex  uint64 `json:"commit_index"`
	AppliedIndex uint64 `json:"applied_index"`
	StateHash    string `json:"state_hash,omitempty"`
	Reachable    bool   `json:"reachable"`
	Error        string `json:"error,omitempty"`
}

func (a *app) rootStatusCmd() *cobra.Command {
	var cf connFlags
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show every root server: state, leader, term, commit and applied index, state hash",
		Long: `Ask the given server for the cluster's servers, then ask each of them for its own
status. Servers that do not answer are listed with the error.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, c, err := a.client(cf)
			if err != nil {
				return err
			}
			defer cl.Close()
			ctx := cmd.Context()
			first, err := cl.Status(ctx)
			if err != nil {
				return c.explain(err)
			}
			rows := make([]serverRow, len(first.Servers))
			var wg sync.WaitGroup
			for i, s := range first.Servers {
				rows[i] = serverRow{Name: s.Name, APIAddr: s.APIAddr, RaftAddr: s.RaftAddr, Suffrage: s.Suffrage}
				if s.Name == first.Name {
					rows[i].fill(first)
					continue
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					rows[i].ask(ctx, c)
				}()
			}
			wg.Wait()
			return a.emit(rows, func(w io.Writer) {
				fmt.Fprintf(w, "network %s, leader %s (as seen by %s)\n\n", first.Network, orDash(first.Leader), first.Name)
				var cells [][]string
				for _, r := range rows {
					mark := ""
					if r.Leader {
						mark = "*"
					}
					reach := "yes"
					if !r.Reachable {
						reach = "no: " + r.Error
					}
					if !r.Reachable {
						cells = append(cells, []string{r.Name, r.Suffrage, "-", "", "-", "-", "-", "-", reach})
						continue
					}
					cells = append(cells, []string{r.Name, r.Suffrage, r.State, mark, strconv.FormatUint(r.Term, 10),
						strconv.FormatUint(r.CommitIndex, 10), strconv.FormatUint(r.AppliedIndex, 10), shortHash(r.StateHash), reach})
				}
				table(w, []string{"NAME", "SUFFRAGE", "STATE", "LEADER", "TERM", "COMMIT", "APPLIED", "STATE HASH", "REACHABLE"}, cells)
			})
		},
	}
	cf.register(cmd)
	return cmd
}

func (r *serverRow) fill(st api.Status) {
	r.Reachable = true
	r.State = st.State
	r.Leader = st.Leader != "" && st.Leader == st.Name
	r.Term, r.CommitIndex, r.AppliedIndex, r.StateHash = st.Term, st.CommitIndex, st.AppliedIndex, st.StateHash
}

// ask fetches the server's own status through its API.
func (r *serverRow) ask(ctx context.Context, c conn) {
	if r.APIAddr == "" {
		r.Error = "its API address is not known yet"
		return
	}
	peer := c
	peer.server = r.APIAddr
	cl, err := peer.dial(r.APIAddr, peerStatusTimeout)
	if err != nil {
		r.Error = oneLine(err.Error())
		return
	}
	defer cl.Close()
	st, err := cl.Status(ctx)
	if err != nil {
		r.Error = oneLine(peer.explain(err).Error())
		return
	}
	r.fill(st)
}

// shortHash shows the first 12 hex digits of a state hash.
func shortHash(h string) string {
	if _, rest, ok := strings.Cut(h, ":"); ok {
		h = rest
	}
	if len(h) > 12 {
		h = h[:12]
	}
	return orDash(h)
}

func (a *app) rootRemoveCmd() *cobra.Command {
	var cf connFlags
	cmd := &cobra.Command{
		Use:   "remove NAME",
		Short: "Remove a (dead) root server: revoke its issuing certificate, rotate the seal key",
		Long: `Remove a root server from the cluster. Its issuing intermediate is revoked at
once, so every certificate under it stops: the server's own TLS and admin
certificates, and the certificates it signed for nodes (those nodes register
again). The AS root key is then sealed under a new seal key that only the
remaining servers hold.

The removed server held the seal key and the sealed AS root key until now:
treat the AS root as exposed if that server was compromised (see the threat
model in docs/architecture.md).`,
		Args: exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, c, err := a.client(cf)
			if err != nil {
				return err
			}
			defer cl.Close()
			if err := cl.RemoveServer(cmd.Context(), args[0]); err != nil {
				return c.explain(err)
			}
			return a.emit(map[string]string{"removed": args[0]}, func(w io.Writer) {
				fmt.Fprintf(w, "removed root server %s: its issuing certificate is revoked and the seal key rotated\n", args[0])
			})
		},
	}
	cf.register(cmd)
	return cmd
}

func (a *app) rootRotateSealCmd() *cobra.Command {
	var cf connFlags
	cmd := &cobra.Command{
		Use:   "rotate-seal",
		Short: "Seal the AS root key under a new seal key held by every current root server",
		Long: `Make a new seal key, hand it to every current root server (each keeps it in
seal.key.next), and once a majority holds it commit the AS root key sealed
under it. "keymesh root remove" does this by itself; run it again if a
removal could not finish it. A server that was down fetches the key from the
others when it starts.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, c, err := a.client(cf)
			if err != nil {
				return err
			}
			defer cl.Close()
			if err := cl.RotateSeal(cmd.Context()); err != nil {
				return c.explain(err)
			}
			return a.emit(map[string]bool{"rotated": true}, func(w io.Writer) {
				fmt.Fprintln(w, "the AS root key is sealed under a new seal key")
			})
		},
	}
	cf.register(cmd)
	return cmd
}
