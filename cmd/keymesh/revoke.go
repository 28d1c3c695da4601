package main

import (
	"fmt"
	"io"
	"math/big"
	"strings"

	"github.com/spf13/cobra"

	"github.com/keymesh/keymesh/cluster/api"
	"github.com/keymesh/keymesh/fsm"
)

// revocationKinds are the kinds of things a revocation names.
var revocationKinds = []struct{ kind, id, help string }{
	{"cert", "SERIAL", "a certificate by its serial number (hex)"},
	{"token", "JTI", "a token by its jti"},
	{"key", "KID", "a node key by its key id (JWK thumbprint)"},
	{"node", "NODE", "a node by its id: all its certificates, keys and tokens"},
}

func (a *app) revokeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "revoke",
		Short: "Revoke a certificate, token, key or node",
	}
	groupCmd(cmd)
	for _, k := range revocationKinds {
		var (
			cf     connFlags
			reason string
		)
		sub := &cobra.Command{
			Use:     k.kind + " " + k.id,
			Short:   "Revoke " + k.help,
			Example: "  keymesh revoke " + k.kind + " " + k.id + " --reason key-compromise",
			Args:    exactArgs(k.id),
			RunE: func(cmd *cobra.Command, args []string) error {
				id := args[0]
				if k.kind == "cert" {
					s, err := canonicalSerial(id)
					if err != nil {
						return usagef("%w", err)
					}
					id = s
				}
				cl, c, err := a.client(cf)
				if err != nil {
					return err
				}
				defer cl.Close()
				res, err := cl.Revoke(cmd.Context(), api.RevokeRequest{Kind: k.kind, ID: id, Reason: reason})
				if err != nil {
					return c.explain(err)
				}
				return a.emit(res, func(w io.Writer) {
					r := res.Revocation
					fmt.Fprintf(w, "revoked %s %s", r.Kind, r.ID)
					if r.Reason != "" {
						fmt.Fprintf(w, " (%s)", r.Reason)
					}
					fmt.Fprintf(w, " at index %d\n", res.Index)
				})
			},
		}
		cf.register(sub)
		sub.Flags().StringVar(&reason, "reason", "", "why, e.g. key-compromise, superseded, cessation-of-operation")
		cmd.AddCommand(sub)
	}
	return cmd
}

// canonicalSerial writes a certificate serial as root servers do: lower-case
// hex without leading zeros. It accepts an optional 0x prefix and the
// colon-separated form tools print (01:AB:...).
func canonicalSerial(s string) (string, error) {
	h := strings.TrimPrefix(strings.TrimPrefix(s, "0x"), "0X")
	h = strings.ReplaceAll(h, ":", "")
	n, ok := new(big.Int).SetString(h, 16)
	if h == "" || !ok || n.Sign() < 0 || len(h) > 64 {
		return "", fmt.Errorf("certificate serial %q is not a hexadecimal number (like 01ab23 or 01:ab:23)", s)
	}
	return n.Text(16), nil
}

func (a *app) revocationsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "revocations",
		Short: "List revocations",
	}
	groupCmd(cmd)
	var (
		cf         connFlags
		kind       string
		consistent bool
	)
	list := &cobra.Command{
		Use:   "list",
		Short: "List revocations, optionally of one kind",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if kind != "" && !contains([]string{"cert", "token", "key", "node"}, kind) {
				return usagef("--kind must be cert, token, key or node, not %q", kind)
			}
			cl, c, err := a.client(cf)
			if err != nil {
				return err
			}
			defer cl.Close()
			revs, err := cl.Revocations(cmd.Context(), kind, consistent)
			if err != nil {
				return c.explain(err)
			}
			if revs == nil {
				revs = []fsm.Revocation{}
			}
			return a.emit(revs, func(w io.Writer) {
				if len(revs) == 0 {
					fmt.Fprintln(w, "no revocations")
					return
				}
				var cells [][]string
				for _, r := range revs {
					cells = append(cells, []string{string(r.Kind), r.ID, orDash(r.Reason), timeText(r.Time), timeText(r.PruneAfter)})
				}
				table(w, []string{"KIND", "ID", "REASON", "REVOKED", "PRUNE AFTER"}, cells)
			})
		},
	}
	cf.register(list)
	list.Flags().StringVar(&kind, "kind", "", "only this kind: cert, token, key or node")
	list.Flags().BoolVar(&consistent, "consistent", false, "reflect every write acknowledged before the call (asks the leader)")
	cmd.AddCommand(list)
	return cmd
}
