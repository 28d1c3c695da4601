package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/keymesh/keymesh/ca"
	"github.com/keymesh/keymesh/cluster/api"
)

// principals a node token may grant (DESIGN.md, tokens).
var principals = []string{"ADMIN", "NODE", "NODE_CUSTODIAN", "DATA_CUSTODIAN", "USER"}

func (a *app) tokensCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tokens",
		Short: "Join tokens: create, list, revoke",
	}
	groupCmd(cmd)
	cmd.AddCommand(a.tokensCreateCmd(), a.tokensListCmd(), a.tokensRevokeCmd())
	return cmd
}

func (a *app) tokensCreateCmd() *cobra.Command {
	var (
		cf                            connFlags
		kind, principal, nodeID, desc string
		dns                           []string
		uses                          int
		ttl                           time.Duration
	)
	cmd := &cobra.Command{
		Use:     "create",
		Short:   "Make a join token; its secret is printed once",
		Example: "  keymesh tokens create --kind node --principal NODE --uses 2 --ttl 1h",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			req := api.CreateJoinTokenRequest{Kind: kind, NodeID: nodeID, Uses: uses, TTL: durationText(ttl), Description: desc, DNSNames: dns}
			switch kind {
			case "node":
				p := strings.ToUpper(principal)
				if !contains(principals, p) {
					return usagef("--principal must be one of %s, not %q", strings.Join(principals, ", "), principal)
				}
				req.Principal = p
			case "root":
				if cmd.Flags().Changed("principal") {
					return usagef("--principal applies to node tokens only")
				}
				if len(dns) > 0 {
					return usagef("--dns applies to node tokens only")
				}
			default:
				return usagef("--kind must be node or root, not %q", kind)
			}
			if nodeID != "" {
				if err := ca.ValidateNodeID(nodeID); err != nil {
					return usagef("--node-id: %w", err)
				}
			}
			if uses < 1 {
				return usagef("--uses must be at least 1, got %d", uses)
			}
			if ttl < 0 {
				return usagef("--ttl must be positive, got %s", ttl)
			}
			return a.createToken(cmd.Context(), cf, req)
		},
	}
	cf.register(cmd)
	fl := cmd.Flags()
	fl.StringVar(&kind, "kind", "node", "node or root")
	fl.StringVar(&principal, "principal", "NODE", "principal the node gets: "+strings.Join(principals, ", "))
	fl.StringVar(&nodeID, "node-id", "", "only the node with this id may use the token")
	fl.IntVar(&uses, "uses", 1, "how many joins the token allows")
	fl.DurationVar(&ttl, "ttl", 0, "how long the token stays valid (default 24h, at most 720h)")
	fl.StringVar(&desc, "description", "", "note kept with the token")
	fl.StringArrayVar(&dns, "dns", nil, "a DNS name under the network's domain the node may hold besides <node-id>.<network> (repeat for more)")
	return cmd
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// tokenRow is a join token as listed, with its state at the time of the
// listing.
type tokenRow struct {
	api.JoinTokenInfo
	State string `json:"state"` // active, spent, expired or revoked
}

func tokenState(t api.JoinTokenInfo, now time.Time) string {
	switch {
	case t.Revoked:
		return "revoked"
	case t.Used >= t.Uses:
		return "spent"
	case !t.Expiry.IsZero() && !now.Before(t.Expiry):
		return "expired"
	}
	return "active"
}

func (a *app) tokensListCmd() *cobra.Command {
	var cf connFlags
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List join tokens (without their secrets)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, c, err := a.client(cf)
			if err != nil {
				return err
			}
			defer cl.Close()
			toks, err := cl.JoinTokens(cmd.Context())
			if err != nil {
				return c.explain(err)
			}
			now := a.now()
			rows := make([]tokenRow, 0, len(toks))
			for _, t := range toks {
				rows = append(rows, tokenRow{JoinTokenInfo: t, State: tokenState(t, now)})
			}
			return a.emit(rows, func(w io.Writer) {
				if len(rows) == 0 {
					fmt.Fprintln(w, "no join tokens")
					return
				}
				var cells [][]string
				for _, r := range rows {
					cells = append(cells, []string{r.ID, r.Kind, orDash(r.Principal), orDash(r.NodeID),
						fmt.Sprintf("%d/%d", r.Used, r.Uses), timeText(r.Expiry), r.State, orDash(r.Description)})
				}
				table(w, []string{"ID", "KIND", "PRINCIPAL", "NODE", "USED", "EXPIRES", "STATE", "DESCRIPTION"}, cells)
			})
		},
	}
	cf.register(cmd)
	return cmd
}

func (a *app) tokensRevokeCmd() *cobra.Command {
	var cf connFlags
	cmd := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke a join token by its id (see `keymesh tokens list`)",
		Args:  exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, c, err := a.client(cf)
			if err != nil {
				return err
			}
			defer cl.Close()
			if err := cl.RevokeJoinToken(cmd.Context(), args[0]); err != nil {
				return c.explain(err)
			}
			return a.emit(map[string]string{"revoked": args[0]}, func(w io.Writer) {
				fmt.Fprintf(w, "revoked join token %s\n", args[0])
			})
		},
	}
	cf.register(cmd)
	return cmd
}
