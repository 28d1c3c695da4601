package main

import (
	"crypto/x509"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/keymesh/keymesh/cluster/api"
	"github.com/keymesh/keymesh/fsm"
)

// registrationStatuses are the states a registration may be in.
var registrationStatuses = []string{fsm.RegistrationPending, fsm.RegistrationApproved, fsm.RegistrationDenied}

func (a *app) registrationsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "registrations",
		Short: "Node registrations: list, approve, deny",
	}
	groupCmd(cmd)
	cmd.AddCommand(a.registrationsListCmd(), a.registrationsApproveCmd(), a.registrationsDenyCmd())
	return cmd
}

func (a *app) registrationsListCmd() *cobra.Command {
	var (
		cf         connFlags
		status     string
		consistent bool
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List node registrations, optionally of one status",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if status != "" && !contains(registrationStatuses, status) {
				return usagef("--status must be %s, not %q", strings.Join(registrationStatuses, ", "), status)
			}
			cl, c, err := a.client(cf)
			if err != nil {
				return err
			}
			defer cl.Close()
			regs, err := cl.Registrations(cmd.Context(), status, consistent)
			if err != nil {
				return c.explain(err)
			}
			if regs == nil {
				regs = []api.RegistrationInfo{}
			}
			return a.emit(regs, func(w io.Writer) {
				if len(regs) == 0 {
					if status != "" {
						fmt.Fprintf(w, "no %s registrations\n", status)
					} else {
						fmt.Fprintln(w, "no registrations")
					}
					return
				}
				var cells [][]string
				for _, r := range regs {
					cells = append(cells, []string{r.ID, r.NodeID, r.Status, r.Principal, timeText(r.Created),
						orDash(r.Serial), orDash(strings.Join(r.DNSNames, ",")), orDash(r.Reason)})
				}
				table(w, []string{"ID", "NODE", "STATUS", "PRINCIPAL", "CREATED", "SERIAL", "DNS", "REASON"}, cells)
			})
		},
	}
	cf.register(cmd)
	cmd.Flags().StringVar(&status, "status", "", "only this status: "+strings.Join(registrationStatuses, ", "))
	cmd.Flags().BoolVar(&consistent, "consistent", false, "reflect every write acknowledged before the call (asks the leader)")
	return cmd
}

// decidedRegistration is what approve and deny print.
type decidedRegistration struct {
	api.RegistrationInfo
	NotAfter time.Time `json:"not_after,omitzero"`
	Index    uint64    `json:"index"`
}

func decided(resp api.RegistrationResponse) decidedRegistration {
	out := decidedRegistration{RegistrationInfo: resp.Registration, Index: resp.Index}
	if len(resp.Chain) > 0 {
		if leaf, err := x509.ParseCertificate(resp.Chain[0]); err == nil {
			out.NotAfter = leaf.NotAfter.UTC()
		}
	}
	return out
}

func (a *app) registrationsApproveCmd() *cobra.Command {
	var (
		cf        connFlags
		principal string
	)
	cmd := &cobra.Command{
		Use:   "approve ID",
		Short: "Approve a pending registration: its certificate is signed at once",
		Long: `Approve a pending node registration (see "keymesh registrations list"). The
certificate is signed and committed now; the node collects it, proving
possession of its key, with "keymesh node join --resume --data-dir DIR" (or
its waiting "keymesh node join" does so on its own). --principal gives the
node another principal than the one it asked for; nobody approves a
principal that may do more than the approver.`,
		Args: exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			p := strings.ToUpper(principal)
			if p != "" && !contains(principals, p) {
				return usagef("--principal must be one of %s, not %q", strings.Join(principals, ", "), principal)
			}
			cl, c, err := a.client(cf)
			if err != nil {
				return err
			}
			defer cl.Close()
			resp, err := cl.ApproveRequest(cmd.Context(), args[0], api.ApproveRequest{Principal: p})
			if err != nil {
				return c.explain(err)
			}
			out := decided(resp)
			return a.emit(out, func(w io.Writer) {
				fmt.Fprintf(w, "approved registration %s of node %s: certificate serial %s, valid until %s\n",
					out.ID, out.NodeID, orDash(out.Serial), timeText(out.NotAfter))
				fmt.Fprintf(w, "The node collects it with `keymesh node join --resume --data-dir <DIR>`.\n")
			})
		},
	}
	cf.register(cmd)
	cmd.Flags().StringVar(&principal, "principal", "", "principal the node gets instead of the one it asked for: "+strings.Join(principals, ", "))
	return cmd
}

func (a *app) registrationsDenyCmd() *cobra.Command {
	var (
		cf     connFlags
		reason string
	)
	cmd := &cobra.Command{
		Use:     "deny ID --reason REASON",
		Short:   "Deny a pending registration; the node is told the reason",
		Example: "  keymesh registrations deny reg-0123 --reason 'unknown hardware'",
		Args:    exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if strings.TrimSpace(reason) == "" {
				return usagef("--reason is required: the node's operator is told why")
			}
			cl, c, err := a.client(cf)
			if err != nil {
				return err
			}
			defer cl.Close()
			resp, err := cl.Deny(cmd.Context(), args[0], reason)
			if err != nil {
				return c.explain(err)
			}
			out := decided(resp)
			return a.emit(out, func(w io.Writer) {
				fmt.Fprintf(w, "denied registration %s of node %s: %s\n", out.ID, out.NodeID, out.Reason)
			})
		},
	}
	cf.register(cmd)
	cmd.Flags().StringVar(&reason, "reason", "", "why, shown to the node's operator (required)")
	return cmd
}
