package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/keymesh/keymesh/cluster/agent"
	"github.com/keymesh/keymesh/cluster/api"
	"github.com/keymesh/keymesh/fsm"
)

func (a *app) gossipCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "gossip",
		Short: "The network's gossip keyring: show it, rotate the key",
	}
	groupCmd(cmd)
	cmd.AddCommand(a.gossipKeyringCmd(), a.gossipRotateCmd())
	return cmd
}

// keyringRows are the rows of a keyring table.
func keyringText(w io.Writer, kr api.GossipKeyring) {
	var rows [][]string
	for _, k := range kr.Keys {
		rows = append(rows, []string{k.ID, k.State, timeText(k.Since)})
	}
	fmt.Fprintf(w, "gossip keyring of %s at index %d\n\n", kr.Network, kr.Index)
	table(w, []string{"KEY", "STATE", "SINCE"}, rows)
}

func (a *app) gossipKeyringCmd() *cobra.Command {
	var cf connFlags
	cmd := &cobra.Command{
		Use:   "keyring",
		Short: "Show the gossip keyring: key ids, which is primary, installed or retiring (never the keys)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, c, err := a.client(cf)
			if err != nil {
				return err
			}
			defer cl.Close()
			kr, err := cl.GossipKeyring(cmd.Context())
			if err != nil {
				return c.explain(err)
			}
			return a.emit(kr, func(w io.Writer) { keyringText(w, kr) })
		},
	}
	cf.register(cmd)
	return cmd
}

// gossipRotateOutput is what `keymesh gossip rotate-key` prints.
type gossipRotateOutput struct {
	Network   string `json:"network"`
	Installed string `json:"installed"`
	// Removed is the old primary, once gone (with --wait).
	Removed string            `json:"removed,omitempty"`
	Elapsed string            `json:"elapsed,omitempty"`
	Keyring api.GossipKeyring `json:"keyring"`
}

func (a *app) gossipRotateCmd() *cobra.Command {
	var cf connFlags
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "rotate-key",
		Short: "Rotate the gossip key: install a new key everywhere, make it primary, remove the old one",
		Long: `Rotate the network's gossip key the way serf does: the leader installs a
new key in the replicated keyring (agents follow it within a blocking query and
add it), makes it primary one step later (agents encrypt with it, still read
the old one), and removes the old key one step after that. A node that is no
longer a member (revoked) gets no new key over mutual TLS and can then
neither read nor join the gossip. Revoking a node starts this by itself.

With --wait, it returns once the old key is removed.`,
		Example: "  keymesh gossip rotate-key --server 10.0.0.1:8443 --wait 1m",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if wait < 0 {
				return usagef("--wait must not be negative, got %s", wait)
			}
			cl, c, err := a.client(cf)
			if err != nil {
				return err
			}
			defer cl.Close()
			before, err := cl.GossipKeyring(cmd.Context())
			if err != nil {
				return c.explain(err)
			}
			start := time.Now()
			kr, err := cl.RotateGossipKey(cmd.Context())
			if err != nil {
				return c.explain(err)
			}
			out := gossipRotateOutput{Network: kr.Network, Keyring: kr}
			for _, k := range kr.Keys {
				if k.State == fsm.GossipKeyInstalled {
					out.Installed = k.ID
				}
			}
			if wait > 0 && out.Installed != "" {
				ctx, cancel := context.WithTimeout(cmd.Context(), wait)
				defer cancel()
				for {
					kr, err = cl.GossipKeyring(ctx)
					if err == nil && len(kr.Keys) == 1 && kr.Keys[0].ID == out.Installed {
						break
					}
					select {
					case <-ctx.Done():
						return fmt.Errorf("the old gossip key is still in the keyring after %s; `keymesh gossip keyring` shows where the rotation is", wait)
					case <-time.After(200 * time.Millisecond): // the roots have no event for this
					}
				}
				out.Keyring, out.Elapsed = kr, time.Since(start).Round(time.Millisecond).String()
				if len(before.Keys) > 0 {
					out.Removed = before.Keys[0].ID
				}
			}
			return a.emit(out, func(w io.Writer) {
				fmt.Fprintf(w, "installed gossip key %s", out.Installed)
				if out.Removed != "" {
					fmt.Fprintf(w, "; it is primary and %s is removed, %s after the call", out.Removed, out.Elapsed)
				}
				fmt.Fprintln(w)
				keyringText(w, out.Keyring)
			})
		},
	}
	cf.register(cmd)
	cmd.Flags().DurationVar(&wait, "wait", 0, "wait up to this long for the old key's removal (0: return once the new key is installed)")
	return cmd
}

func (a *app) membersCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "members",
		Short: "Show the gossip node graph of a running node agent",
	}
	groupCmd(cmd)
	cmd.AddCommand(a.membersListCmd())
	return cmd
}

func (a *app) membersListCmd() *cobra.Command {
	var dataDir string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the members the node's agent knows by gossip: id, network, address, state, since",
		Long: `List the node graph of the node's agent: the members of accepted networks
whose membership proof (signed by their node key) verifies, with where they
gossip and take peering sessions, their state (alive, suspect, dead, left,
revoked) and since when.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var res agent.MembersResponse
			if err := withAgent(cmd, dataDir, "list its gossip members", func(ctx context.Context, lc *agent.LocalClient) error {
				var err error
				res, err = lc.Members(ctx)
				return err
			}); err != nil {
				return err
			}
			return a.emit(res, func(w io.Writer) {
				fmt.Fprintf(w, "node %s of network %s gossips on %s (keyring index %d)\n\n", res.Node, res.Network, res.Gossip, res.KeyringIndex)
				var rows [][]string
				for _, m := range res.Members {
					peer := m.Peer
					if peer == "" {
						peer = "-"
					}
					rows = append(rows, []string{m.Node, m.Network, m.Addr, peer, string(m.State), timeText(m.Since)})
				}
				table(w, []string{"MEMBER", "NETWORK", "ADDRESS", "PEERING", "STATE", "SINCE"}, rows)
			})
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", "", "the node's data directory (its agent must run with --gossip-addr)")
	return cmd
}
