package main

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/keymesh/keymesh/ca"
	"github.com/keymesh/keymesh/cluster/api"
	"github.com/keymesh/keymesh/fsm"
)

func (a *app) routesCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "routes",
		Short: "Routes of a node, and route authorizations: who may originate which prefix",
		Long: `A node's agent announces routes signed by the node (announce, withdraw) and
holds the routes its neighbours send, each checked along its signed path
(list). Route (origin) authorizations say which nodes may originate a prefix,
and up to which prefix length, as ROAs do in the RPKI. They live in the
replicated state; every node validates the routes it learns against them.`,
	}
	groupCmd(cmd)
	cmd.AddCommand(a.routesAnnounceCmd(), a.routesWithdrawCmd(), a.routesListCmd(),
		a.routesAuthorizeCmd(), a.routesListAuthCmd(), a.routesUnauthorizeCmd())
	return cmd
}

// checkPrefixArg checks a prefix argument: canonical CIDR.
func checkPrefixArg(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return p, usagef("%q is not a prefix like 10.0.0.0/8 or 2001:db8::/32", s)
	}
	if m := p.Masked(); m != p {
		return p, usagef("prefix %q has host bits set; use %s", s, m)
	}
	return p, nil
}

func (a *app) routesAuthorizeCmd() *cobra.Command {
	var (
		cf      connFlags
		origins []string
		maxLen  int
		asnArg  string
	)
	cmd := &cobra.Command{
		Use:   "authorize PREFIX --origin NODE",
		Short: "Let nodes originate a prefix, up to a prefix length",
		Long: `Let nodes originate a prefix, up to a prefix length, from an AS as routers
see it: --asn, else the AS the authorization has, else the network's (network
set-asn). An authorization without any AS is made, and not served to routers
until it has one.`,
		Example: "  keymesh routes authorize 10.20.0.0/16 --origin edge-1 --max-length 24 --asn 64500",
		Args:    exactArgs("PREFIX"),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := checkPrefixArg(args[0])
			if err != nil {
				return err
			}
			if len(origins) == 0 {
				return usagef("name at least one --origin (a node id)")
			}
			for _, o := range origins {
				if err := ca.ValidateNodeID(o); err != nil {
					return usagef("--origin: %w", err)
				}
			}
			if maxLen != 0 && (maxLen < p.Bits() || maxLen > p.Addr().BitLen()) {
				return usagef("--max-length %d is outside %d..%d for %s", maxLen, p.Bits(), p.Addr().BitLen(), p)
			}
			var asn uint32
			if cmd.Flags().Changed("asn") {
				if asn, err = parseASN("--asn", asnArg); err != nil {
					return err
				}
			}
			cl, c, err := a.client(cf)
			if err != nil {
				return err
			}
			defer cl.Close()
			res, err := cl.AuthorizeRoute(cmd.Context(), api.RouteAuthRequest{Prefix: p.String(), Origins: origins, MaxLength: maxLen, ASN: asn})
			if err != nil {
				return c.explain(err)
			}
			if res.Warning != "" {
				fmt.Fprintf(a.stderr, "keymesh: warning: %s\n", res.Warning)
			}
			return a.emit(res, func(w io.Writer) {
				as := ""
				if res.Auth.ASN != 0 {
					as = fmt.Sprintf(", from AS %d", res.Auth.ASN)
				}
				fmt.Fprintf(w, "%s may be originated by %s, up to /%d%s (index %d)\n", res.Auth.Prefix, strings.Join(res.Auth.Origins, ", "), res.Auth.MaxLength, as, res.Index)
			})
		},
	}
	cf.register(cmd)
	cmd.Flags().StringArrayVar(&origins, "origin", nil, "a node that may originate the prefix (repeat for more); added to those it has")
	cmd.Flags().IntVar(&maxLen, "max-length", 0, "the longest prefix the origins may announce within it (default: the prefix's own length, or what it has)")
	cmd.Flags().StringVar(&asnArg, "asn", "", "the AS routers see the prefix originated from, e.g. 64500 (default: what it has, else the network's AS number)")
	return cmd
}

func (a *app) routesListAuthCmd() *cobra.Command {
	var (
		cf         connFlags
		consistent bool
	)
	cmd := &cobra.Command{
		Use:   "authorizations",
		Short: "List the route authorizations",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, c, err := a.client(cf)
			if err != nil {
				return err
			}
			defer cl.Close()
			auths, err := cl.RouteAuths(cmd.Context(), consistent)
			if err != nil {
				return c.explain(err)
			}
			if auths == nil {
				auths = []fsm.RouteAuth{}
			}
			return a.emit(auths, func(w io.Writer) {
				if len(auths) == 0 {
					fmt.Fprintln(w, "no route authorizations")
					return
				}
				var cells [][]string
				for _, ra := range auths {
					cells = append(cells, []string{ra.Prefix, "/" + strconv.Itoa(ra.MaxLength), asnText(ra.ASN), strings.Join(ra.Origins, ",")})
				}
				table(w, []string{"PREFIX", "MAX LENGTH", "ASN", "ORIGINS"}, cells)
			})
		},
	}
	cf.register(cmd)
	cmd.Flags().BoolVar(&consistent, "consistent", false, "reflect every write acknowledged before the call (asks the leader)")
	return cmd
}

func (a *app) routesUnauthorizeCmd() *cobra.Command {
	var (
		cf      connFlags
		origins []string
	)
	cmd := &cobra.Command{
		Use:   "unauthorize PREFIX [--origin NODE]",
		Short: "Remove origins from a prefix's authorization, or the whole authorization",
		Args:  exactArgs("PREFIX"),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := checkPrefixArg(args[0])
			if err != nil {
				return err
			}
			cl, c, err := a.client(cf)
			if err != nil {
				return err
			}
			defer cl.Close()
			res, err := cl.UnauthorizeRoute(cmd.Context(), p.String(), origins)
			if err != nil {
				return c.explain(err)
			}
			return a.emit(res, func(w io.Writer) {
				if res.Removed {
					fmt.Fprintf(w, "%s is authorized for no origin any more (index %d)\n", p, res.Index)
					return
				}
				fmt.Fprintf(w, "%s may be originated by %s (index %d)\n", p, strings.Join(res.Auth.Origins, ", "), res.Index)
			})
		},
	}
	cf.register(cmd)
	cmd.Flags().StringArrayVar(&origins, "origin", nil, "an origin to remove (repeat for more); without, the whole authorization goes")
	return cmd
}

func (a *app) trustCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "trust",
		Short: "Trust anchors: federate with other networks",
		Long: `Each network's root cluster is the trust anchor of its members. "trust add"
anchors another network by its AS root certificate and accepts its members
(the access list); "trust remove" stops accepting them. Nodes follow both
through the replicated trust state.`,
	}
	groupCmd(cmd)
	cmd.AddCommand(a.trustAddCmd(), a.trustListCmd(), a.trustRemoveCmd())
	return cmd
}

func (a *app) trustAddCmd() *cobra.Command {
	var (
		cf        connFlags
		caFile    string
		endpoints []string
	)
	cmd := &cobra.Command{
		Use:   "add NETWORK --ca-file FILE [--endpoint HOST:PORT]...",
		Short: "Anchor another network by its AS root and accept its members",
		Long: `Anchors another network by its AS root certificate and puts it on this
network's access list. With --endpoint (its root servers' API addresses), the
leader follows the JWKS those roots publish, so that the other network's nodes'
tokens and routes verify here: federation needs it, and needs the other
network to anchor this one too.`,
		Example: "  keymesh trust add testnet.example.net --ca-file testnet-ca.pem --endpoint t1.example.net:8443 --data-dir /var/lib/keymesh/r1",
		Args:    exactArgs("NETWORK"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := ca.ValidateNetwork(args[0]); err != nil {
				return usagef("%w", err)
			}
			if err := require([2]string{"ca-file", caFile}); err != nil {
				return err
			}
			pem, err := a.readInput(caFile, "the anchor's CA file")
			if err != nil {
				return err
			}
			cl, c, err := a.client(cf)
			if err != nil {
				return err
			}
			defer cl.Close()
			for _, ep := range endpoints {
				if _, _, err := net.SplitHostPort(ep); err != nil {
					return usagef("--endpoint %q is not host:port", ep)
				}
			}
			res, err := cl.PutAnchor(cmd.Context(), args[0], pem, endpoints...)
			if err != nil {
				return c.explain(err)
			}
			return a.emit(res, func(w io.Writer) {
				fmt.Fprintf(w, "network %s is anchored (%d root certificate(s)) and its members are accepted (index %d)\n", args[0], len(res.Anchor.Roots), res.Index)
				if len(endpoints) > 0 {
					fmt.Fprintf(w, "its nodes' keys are followed from %s\n", strings.Join(endpoints, ", "))
				}
			})
		},
	}
	cf.registerCA(cmd, false)
	cmd.Flags().StringVar(&caFile, "ca-file", "", "PEM file with the other network's AS root certificate(s) (its ca.pem); "+
		"this cluster's own CA comes from --data-dir or $"+envCAFile)
	cmd.Flags().StringArrayVar(&endpoints, "endpoint", nil, "API address of a root server of that network whose published JWKS to follow (repeatable)")
	return cmd
}

func (a *app) trustListCmd() *cobra.Command {
	var cf connFlags
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the trust anchors and whether their members are accepted",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, c, err := a.client(cf)
			if err != nil {
				return err
			}
			defer cl.Close()
			anchors, err := cl.Anchors(cmd.Context())
			if err != nil {
				return c.explain(err)
			}
			return a.emit(anchors, func(w io.Writer) {
				var cells [][]string
				for _, an := range anchors {
					own, acc := "federated", "no"
					if an.Own {
						own = "own"
					}
					if an.Accepted {
						acc = "yes"
					}
					keys := "-"
					if !an.Own {
						keys = strconv.Itoa(an.Keys)
					}
					for _, r := range an.Roots {
						cells = append(cells, []string{an.Network, own, acc, r.CAHash, timeText(r.NotAfter), keys, strings.Join(an.Endpoints, ",")})
					}
				}
				table(w, []string{"NETWORK", "KIND", "ACCEPTED", "CA HASH", "NOT AFTER", "KEYS", "ENDPOINTS"}, cells)
			})
		},
	}
	cf.register(cmd)
	return cmd
}

func (a *app) trustRemoveCmd() *cobra.Command {
	var cf connFlags
	cmd := &cobra.Command{
		Use:   "remove NETWORK",
		Short: "Stop accepting another network's members and drop its anchor",
		Args:  exactArgs("NETWORK"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := ca.ValidateNetwork(args[0]); err != nil {
				return usagef("%w", err)
			}
			cl, c, err := a.client(cf)
			if err != nil {
				return err
			}
			defer cl.Close()
			res, err := cl.DeleteAnchor(cmd.Context(), args[0])
			if err != nil {
				return c.explain(err)
			}
			return a.emit(res, func(w io.Writer) {
				fmt.Fprintf(w, "network %s is no longer trusted (index %d)\n", args[0], res.Index)
			})
		},
	}
	cf.register(cmd)
	return cmd
}
