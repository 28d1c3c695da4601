package main

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/keymesh/keymesh/cluster/api"
	"github.com/keymesh/keymesh/fsm"
)

func (a *app) networkCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "network",
		Short: "The network: its name, AS number and exclusive membership",
		Long: `The network's AS number is the autonomous system its routes are originated
from, as routers see them: a route authorization made without an AS of its own
(routes authorize without --asn) takes it, and routers are served the
authorizations that have one (RTR, RFC 8210). Set it at "root bootstrap
--asn" or later with "network set-asn".

A network may require exclusive membership ("network set-exclusive on"): its
nodes then refuse peers that are members of other networks too.`,
	}
	groupCmd(cmd)
	cmd.AddCommand(a.networkShowCmd(), a.networkSetASNCmd(), a.networkSetExclusiveCmd())
	return cmd
}

// parseASN reads an AS number given as what (a flag or an argument):
// decimal, optionally written AS64500, one fsm.CheckASN takes (so never
// 0, AS_TRANS 23456, 65535 or 4294967295).
func parseASN(what, s string) (uint32, error) {
	digits := s
	if len(digits) > 2 && strings.EqualFold(digits[:2], "AS") {
		digits = digits[2:]
	}
	n, err := strconv.ParseUint(digits, 10, 32)
	if err != nil {
		if errors.Is(err, strconv.ErrRange) {
			return 0, usagef("%s %s is over 4294967295, the last 32-bit AS number", what, s)
		}
		return 0, usagef("%s %q is not an AS number; give it in decimal, such as 64500", what, s)
	}
	if err := fsm.CheckASN(uint32(n)); err != nil {
		return 0, usagef("%s %s: %w (private AS numbers are 64512-65534 and 4200000000-4294967294)", what, s, err)
	}
	return uint32(n), nil
}

// asnText prints an AS number for tables, "-" for none.
func asnText(asn uint32) string {
	if asn == 0 {
		return "-"
	}
	return strconv.FormatUint(uint64(asn), 10)
}

// parseOnOff reads a switch given as what: on or off, true or false (in
// any case).
func parseOnOff(what, s string) (bool, error) {
	switch strings.ToLower(s) {
	case "on", "true":
		return true, nil
	case "off", "false":
		return false, nil
	}
	return false, usagef("%s %q is not on or off (true or false)", what, s)
}

// exclusiveText says whether the network requires exclusive membership,
// for the text output.
func exclusiveText(info api.NetworkInfo) string {
	if info.Exclusive {
		return fmt.Sprintf("network %s requires exclusive membership: its nodes refuse peers that are members of other networks too (anchor index %d)", info.Network, info.AnchorIndex)
	}
	return fmt.Sprintf("network %s does not require exclusive membership (anchor index %d)", info.Network, info.AnchorIndex)
}

func (a *app) networkShowCmd() *cobra.Command {
	var cf connFlags
	cmd := &cobra.Command{
		Use:   "show",
		Short: "Show the network's name, AS number and exclusive membership",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, c, err := a.client(cf)
			if err != nil {
				return err
			}
			defer cl.Close()
			info, err := cl.Network(cmd.Context())
			if err != nil {
				return c.explain(err)
			}
			return a.emit(info, func(w io.Writer) {
				if info.ASN == 0 {
					fmt.Fprintf(w, "network %s has no AS number; set one with `keymesh network set-asn ASN`\n", info.Network)
				} else {
					fmt.Fprintf(w, "network %s is AS %d (index %d)\n", info.Network, info.ASN, info.Index)
				}
				fmt.Fprintln(w, exclusiveText(info))
			})
		},
	}
	cf.register(cmd)
	return cmd
}

func (a *app) networkSetASNCmd() *cobra.Command {
	var cf connFlags
	cmd := &cobra.Command{
		Use:   "set-asn ASN",
		Short: "Set the network's AS number",
		Long: `Set the network's AS number. Route authorizations made from now on without
--asn take it; one made before without any AS takes it when it is authorized
again (routes authorize PREFIX --origin NODE). Those that have an AS keep it.`,
		Example: "  keymesh network set-asn 64500 --data-dir /var/lib/keymesh/r1",
		Args:    exactArgs("ASN"),
		RunE: func(cmd *cobra.Command, args []string) error {
			asn, err := parseASN("ASN", args[0])
			if err != nil {
				return err
			}
			cl, c, err := a.client(cf)
			if err != nil {
				return err
			}
			defer cl.Close()
			info, err := cl.SetNetworkASN(cmd.Context(), asn)
			if err != nil {
				return c.explain(err)
			}
			var without []string
			if auths, err := cl.RouteAuths(cmd.Context(), false); err == nil {
				for _, ra := range auths {
					if ra.ASN == 0 {
						without = append(without, ra.Prefix)
					}
				}
			}
			if len(without) > 0 {
				fmt.Fprintf(a.stderr, "keymesh: warning: %d route authorization(s) have no AS number and are not served to routers (%s); "+
					"authorize each again (`keymesh routes authorize PREFIX --origin NODE`) to give it AS %d\n", len(without), strings.Join(without, ", "), info.ASN)
			}
			return a.emit(info, func(w io.Writer) {
				fmt.Fprintf(w, "network %s is AS %d (index %d)\n", info.Network, info.ASN, info.Index)
			})
		},
	}
	cf.register(cmd)
	return cmd
}

func (a *app) networkSetExclusiveCmd() *cobra.Command {
	var cf connFlags
	cmd := &cobra.Command{
		Use:   "set-exclusive on|off",
		Short: "Require exclusive membership of the network, or stop requiring it",
		Long: `Turn the network's exclusive membership on or off (also true or false).
With it on, the network's nodes refuse peers that are members of other networks
too. It is a flag of the network's own trust anchor, replicated with it, so
setting it takes the trust.write action, as the access list does; nodes follow
it with their trust state.`,
		Example: "  keymesh network set-exclusive on --data-dir /var/lib/keymesh/r1",
		Args:    exactArgs("on|off"),
		RunE: func(cmd *cobra.Command, args []string) error {
			on, err := parseOnOff("exclusive membership", args[0])
			if err != nil {
				return err
			}
			cl, c, err := a.client(cf)
			if err != nil {
				return err
			}
			defer cl.Close()
			info, err := cl.SetNetworkExclusive(cmd.Context(), on)
			if err != nil {
				return c.explain(err)
			}
			return a.emit(info, func(w io.Writer) { fmt.Fprintln(w, exclusiveText(info)) })
		},
	}
	cf.register(cmd)
	return cmd
}
