package main

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/keymesh/keymesh/cluster/api"
	"github.com/keymesh/keymesh/identity"
	"github.com/keymesh/keymesh/identity/policy"
)

func (a *app) policyCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "The Cedar policies that decide every admin call: get, set",
	}
	groupCmd(cmd)
	cmd.AddCommand(a.policyGetCmd(), a.policySetCmd())
	return cmd
}

func (a *app) policyGetCmd() *cobra.Command {
	var cf connFlags
	cmd := &cobra.Command{
		Use:   "get",
		Short: "Print the policy set in force (the built-in one until a policy is set)",
		Long: `Print the Cedar policy set in force, as text that "keymesh policy set" takes
back. With --output json: {"text", "version", "default"}; the version is what
"keymesh policy set --expect-version" compares with.`,
		Example: "  keymesh policy get > policies.cedar\n  keymesh policy get -o json",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, c, err := a.client(cf)
			if err != nil {
				return err
			}
			defer cl.Close()
			doc, err := cl.Policy(cmd.Context())
			if err != nil {
				return c.explain(err)
			}
			return a.emit(doc, func(w io.Writer) {
				io.WriteString(w, doc.Text)
				if !strings.HasSuffix(doc.Text, "\n") {
					fmt.Fprintln(w)
				}
			})
		},
	}
	cf.register(cmd)
	return cmd
}

// policySetOutput is what `keymesh policy set` prints.
type policySetOutput struct {
	Version  uint64 `json:"version"`
	Replaced uint64 `json:"replaced_version"`
}

func (a *app) policySetCmd() *cobra.Command {
	var (
		cf     connFlags
		expect uint64
		force  bool
	)
	cmd := &cobra.Command{
		Use:   "set FILE",
		Short: "Replace the policy set with the Cedar policies in FILE (- for standard input)",
		Long: `Replace the policy set of the network with the Cedar policies in FILE (- reads
standard input). The root servers validate it against the keymesh schema and
refuse a bad one, changing nothing; a valid one is committed through Raft and
decides every call from then on.

The change applies only if the policy set is still at the version it
replaces: --expect-version (as "keymesh policy get -o json" printed it), by
default the version in force just before. An empty FILE returns to the
built-in policies. A set under which ADMIN could no longer change policies
is refused unless --force.`,
		Example: "  keymesh policy get > p.cedar && $EDITOR p.cedar && keymesh policy set p.cedar\n" +
			"  keymesh policy set p.cedar --expect-version 3",
		Args: exactArgs("FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			b, err := a.readInput(args[0], "the policy file")
			if err != nil {
				return err
			}
			text := string(b)
			if strings.TrimSpace(text) == "" {
				// The root servers read "" as the built-in set; white
				// space alone would be a set that permits nothing.
				text = ""
			}
			if !force {
				if err := checkKeepsAdmin(text); err != nil {
					return err
				}
			}
			cl, c, err := a.client(cf)
			if err != nil {
				return err
			}
			defer cl.Close()
			ctx := cmd.Context()
			if !cmd.Flags().Changed("expect-version") {
				cur, err := cl.Policy(ctx)
				if err != nil {
					return c.explain(err)
				}
				expect = cur.Version
			}
			doc, err := cl.SetPolicy(ctx, text, expect)
			if err != nil {
				return explainPolicySet(c, err, expect)
			}
			out := policySetOutput{Version: doc.Version, Replaced: expect}
			return a.emit(out, func(w io.Writer) {
				what := "the policies of " + args[0]
				if text == "" {
					what = "the built-in policies"
				}
				fmt.Fprintf(w, "policy set to %s: version %d (replaced version %d)\n", what, out.Version, out.Replaced)
			})
		},
	}
	cf.register(cmd)
	cmd.Flags().Uint64Var(&expect, "expect-version", 0, "change only if the policy set is at this version (default: the version in force)")
	cmd.Flags().BoolVar(&force, "force", false, "set it even if ADMIN could no longer change policies under it")
	return cmd
}

// checkKeepsAdmin refuses a policy set under which an ADMIN token could no
// longer write policies: once committed, nobody could set a better one. A
// set that does not parse is left to the root servers, which say why.
func checkKeepsAdmin(text string) error {
	if text == "" {
		return nil
	}
	ps, err := policy.ParsePolicies(text)
	if err != nil {
		return nil
	}
	d, err := policy.NewAuthorizer(ps).Decide(identity.PrincipalAdmin, policy.PolicyWrite, policy.Context{})
	if err == nil && d.Allow {
		return nil
	}
	return fmt.Errorf("under this policy set ADMIN may not %s, so nobody could change the policies again; add a permit for it (the built-in set has @id(\"admin-all\")), or pass --force", policy.PolicyWrite)
}

// explainPolicySet turns a refused policy change into one line: the
// parser's message for a bad set, the versions for a stale one.
func explainPolicySet(c conn, err error, expect uint64) error {
	var ae *api.APIError
	if !errors.As(err, &ae) {
		return c.explain(err)
	}
	switch {
	case errors.Is(err, api.ErrInvalidPolicy):
		return fmt.Errorf("policy set refused: %s; nothing changed", ae.Message)
	case errors.Is(err, api.ErrConflict):
		return fmt.Errorf("policy set refused: it changed since version %d was read (%s); nothing changed; look at `keymesh policy get` and set again", expect, ae.Message)
	}
	return c.explain(err)
}
