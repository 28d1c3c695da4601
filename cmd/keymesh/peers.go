package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/keymesh/keymesh/cluster/agent"
)

func (a *app) peersCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "peers",
		Short: "Show and reset the peering sessions of a running node agent",
	}
	groupCmd(cmd)
	cmd.AddCommand(a.peersListCmd(), a.peersResetCmd())
	return cmd
}

// localAgent is a client of the agent of the node in dir (its membership
// of the network --network names, if the command has that flag and it is
// set), or why there is none.
func localAgent(cmd *cobra.Command, dataDir string) (*agent.LocalClient, error) {
	if dataDir == "" {
		return nil, usagef("--data-dir is required: the data directory of the node whose agent runs")
	}
	dir, err := memberDir(cmd, dataDir)
	if err != nil {
		return nil, err
	}
	if !agentSocketExists(dir) {
		return nil, fmt.Errorf("no node agent runs for %s (no %s); start it with `keymesh node run --data-dir %s`", dir, agent.SocketPath(dir), dataDir)
	}
	return agent.NewLocalClient(agent.SocketPath(dir)), nil
}

// networkFlag adds --network to a command that talks to a node: which of
// the node's memberships it means.
func networkFlag(cmd *cobra.Command) {
	cmd.Flags().String("network", "", "the network of the node's membership to use, if it is a member of several (default: the first it joined)")
}

// memberDir is the absolute data directory of the membership --network
// names (the node's first without the flag).
func memberDir(cmd *cobra.Command, dataDir string) (string, error) {
	dir, err := filepath.Abs(dataDir)
	if err != nil {
		return "", err
	}
	f := cmd.Flags().Lookup("network")
	if f == nil || f.Value.String() == "" {
		return dir, nil
	}
	m, err := agent.FindMembership(dir, f.Value.String())
	if errors.Is(err, agent.ErrNoNode) {
		return "", nodeDirError(dir, err)
	}
	if err != nil {
		return "", err
	}
	return m.Dir, nil
}

// withAgent runs fn with a client of the agent of dataDir, within
// agentCallTimeout; what fails says what to do (what names the call).
func withAgent(cmd *cobra.Command, dataDir, what string, fn func(context.Context, *agent.LocalClient) error) error {
	lc, err := localAgent(cmd, dataDir)
	if err != nil {
		return err
	}
	defer lc.Close()
	ctx, cancel := context.WithTimeout(cmd.Context(), agentCallTimeout)
	defer cancel()
	err = fn(ctx, lc)
	if errors.Is(err, agent.ErrNoAgent) {
		return fmt.Errorf("the node agent of %s does not answer; start it with `keymesh node run`", dataDir)
	}
	if err != nil {
		return explainAgent(what, err)
	}
	return nil
}

func (a *app) peersListCmd() *cobra.Command {
	var dataDir string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the node's peers: state, since when, the last NOTIFICATIONs, messages",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var res agent.PeersResponse
			if err := withAgent(cmd, dataDir, "list its peers", func(ctx context.Context, lc *agent.LocalClient) error {
				var err error
				res, err = lc.Peers(ctx)
				return err
			}); err != nil {
				return err
			}
			return a.emit(res, func(w io.Writer) {
				if res.Listen != "" {
					fmt.Fprintf(w, "node %s of network %s takes sessions on %s\n\n", res.Node, res.Network, res.Listen)
				}
				if len(res.Peers) == 0 {
					fmt.Fprintln(w, "no peers")
					return
				}
				var rows [][]string
				for _, p := range res.Peers {
					sent, recv := "-", "-"
					if p.LastSent != nil {
						sent = p.LastSent.Code
					}
					if p.LastReceived != nil {
						recv = p.LastReceived.Code
					}
					rows = append(rows, []string{p.ID, p.Network, p.Role, p.State.String(), timeText(p.Since), sent, recv,
						strconv.FormatUint(p.MessagesIn, 10), strconv.FormatUint(p.MessagesOut, 10)})
				}
				table(w, []string{"PEER", "NETWORK", "ROLE", "STATE", "SINCE", "LAST SENT", "LAST RECEIVED", "IN", "OUT"}, rows)
			})
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", "", "the node's data directory (its agent must run)")
	networkFlag(cmd)
	return cmd
}

// peerResetOutput is what `keymesh peers reset` prints.
type peerResetOutput struct {
	Peer string `json:"peer"`
}

func (a *app) peersResetCmd() *cobra.Command {
	var dataDir string
	cmd := &cobra.Command{
		Use:   "reset ID",
		Short: "End the session with peer ID (Cease, reset); a configured peer is dialled again at once",
		Args:  exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			lc, err := localAgent(cmd, dataDir)
			if err != nil {
				return err
			}
			defer lc.Close()
			ctx, cancel := context.WithTimeout(cmd.Context(), agentCallTimeout)
			defer cancel()
			if err := lc.ResetPeer(ctx, args[0]); err != nil {
				var le *agent.LocalAPIError
				if errors.As(err, &le) && le.Code == agent.CodeNotFound {
					return fmt.Errorf("the node agent has no session with %s; `keymesh peers list --data-dir %s` shows its peers", args[0], dataDir)
				}
				return explainAgent("reset the session", err)
			}
			out := peerResetOutput{Peer: args[0]}
			return a.emit(out, func(w io.Writer) { fmt.Fprintf(w, "reset the session with %s\n", out.Peer) })
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", "", "the node's data directory (its agent must run)")
	networkFlag(cmd)
	return cmd
}
