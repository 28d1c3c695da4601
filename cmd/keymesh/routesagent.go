package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/keymesh/keymesh/cluster/agent"
	"github.com/keymesh/keymesh/routing"
)

// The routes a node agent holds and originates: announce, withdraw and
// list talk to the agent's socket.

func (a *app) routesAnnounceCmd() *cobra.Command {
	var (
		dataDir, nextHop string
		meta             []string
	)
	cmd := &cobra.Command{
		Use:   "announce NLRI --data-dir D",
		Short: "Originate a route for a prefix or a service (service:NAME), signed by this node",
		Example: "  keymesh routes announce 10.20.1.0/24 --data-dir /var/lib/keymesh/edge-1 --next-hop 10.0.0.21\n" +
			"  keymesh routes announce service:web.prod --data-dir /var/lib/keymesh/edge-1 --meta port=443",
		Args: exactArgs("NLRI"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := routing.ParseNLRI(args[0]); err != nil {
				return usagef("%v", err)
			}
			req := agent.AnnounceRequest{NLRI: args[0], NextHop: nextHop}
			for _, kv := range meta {
				k, v, ok := strings.Cut(kv, "=")
				if !ok || k == "" {
					return usagef("--meta %q is not KEY=VALUE", kv)
				}
				if req.Meta == nil {
					req.Meta = map[string]string{}
				}
				req.Meta[k] = v
			}
			var out routing.RouteStatus
			if err := withAgent(cmd, dataDir, "announce the route", func(ctx context.Context, lc *agent.LocalClient) error {
				var err error
				out, err = lc.Announce(ctx, req)
				return err
			}); err != nil {
				return err
			}
			return a.emit(out, func(w io.Writer) {
				fmt.Fprintf(w, "announced %s from %s: sequence %d, signed %s with key %s\n", out.NLRI, out.Origin, out.Seq, timeText(out.SignedAt), out.KID)
			})
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&dataDir, "data-dir", "", "the node's data directory (its agent must run)")
	networkFlag(cmd)
	fl.StringVar(&nextHop, "next-hop", "", "the route's next hop (an IP address)")
	fl.StringArrayVar(&meta, "meta", nil, "metadata KEY=VALUE (repeatable)")
	return cmd
}

func (a *app) routesWithdrawCmd() *cobra.Command {
	var dataDir string
	cmd := &cobra.Command{
		Use:   "withdraw NLRI --data-dir D",
		Short: "Stop originating a route; the neighbours withdraw it",
		Args:  exactArgs("NLRI"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := routing.ParseNLRI(args[0]); err != nil {
				return usagef("%v", err)
			}
			if err := withAgent(cmd, dataDir, "withdraw the route", func(ctx context.Context, lc *agent.LocalClient) error {
				return lc.Withdraw(ctx, args[0])
			}); err != nil {
				return err
			}
			out := map[string]string{"withdrawn": args[0]}
			return a.emit(out, func(w io.Writer) { fmt.Fprintf(w, "withdrew %s\n", args[0]) })
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", "", "the node's data directory (its agent must run)")
	networkFlag(cmd)
	return cmd
}

func (a *app) routesListCmd() *cobra.Command {
	var dataDir, peer string
	cmd := &cobra.Command{
		Use:   "list --data-dir D [--peer ID]",
		Short: "List the routes a node holds: NLRI, origin, path, validation state, best or not, why refused",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var res agent.RoutesResponse
			if err := withAgent(cmd, dataDir, "list its routes", func(ctx context.Context, lc *agent.LocalClient) error {
				var err error
				res, err = lc.Routes(ctx, peer)
				return err
			}); err != nil {
				return err
			}
			return a.emit(res, func(w io.Writer) {
				fmt.Fprintf(w, "node %s signs its routes with key %s", res.Node, res.Key.KID)
				if res.Key.Staged != "" {
					fmt.Fprintf(w, "; new key %s staged, used from %s", res.Key.Staged, timeText(res.Key.UseAt))
				}
				fmt.Fprintf(w, "; %d routes of its own, %d best\n\n", res.Key.Routes, res.Key.Best)
				if len(res.Routes) == 0 {
					fmt.Fprintln(w, "no routes")
					return
				}
				var rows [][]string
				for _, r := range res.Routes {
					from, best, state := r.From, "", r.State
					if r.Local {
						from = "(local)"
					}
					if r.Best {
						best = "*"
					}
					if r.Rejected != "" {
						state = "refused: " + r.Rejected
					}
					rows = append(rows, []string{best, r.NLRI, r.Origin, strings.Join(r.Path, ">"), from, strconv.FormatUint(r.Seq, 10), state})
				}
				table(w, []string{"", "NLRI", "ORIGIN", "PATH", "FROM", "SEQ", "STATE"}, rows)
			})
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&dataDir, "data-dir", "", "the node's data directory (its agent must run)")
	networkFlag(cmd)
	fl.StringVar(&peer, "peer", "", "only the routes this neighbour sent")
	return cmd
}
