package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/keymesh/keymesh/routing/rtr"
)

// envRTR names the RTR cache `rtr dump` asks by default (keymesh dev
// exports it).
const envRTR = "KEYMESH_RTR"

func (a *app) rtrCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rtr",
		Short: "What routers are served over RTR (RFC 8210)",
		Long: `Roots serve the network's route authorizations to routers over RTR with
--rtr-addr (root bootstrap, join, start), node agents with --rtr-listen
(node run). "rtr dump" asks a cache what a router would get.`,
	}
	groupCmd(cmd)
	cmd.AddCommand(a.rtrDumpCmd())
	return cmd
}

// rtrDumpOutput is what `rtr dump` prints.
type rtrDumpOutput struct {
	Addr    string       `json:"addr"`
	Version uint8        `json:"version"`
	Session uint16       `json:"session"`
	Serial  uint32       `json:"serial"`
	Refresh uint32       `json:"refresh,omitempty"`
	Retry   uint32       `json:"retry,omitempty"`
	Expire  uint32       `json:"expire,omitempty"`
	VRPs    []rtrVRPJSON `json:"vrps"`
}

type rtrVRPJSON struct {
	Prefix    string `json:"prefix"`
	MaxLength uint8  `json:"max_length"`
	ASN       uint32 `json:"asn"`
}

func (a *app) rtrDumpCmd() *cobra.Command {
	var (
		addr    string
		version uint8
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "dump [--addr HOST:PORT]",
		Short: "Ask an RTR cache for everything, as a router does, and print it",
		Long: `Connect to an RTR cache (a root's --rtr-addr or an agent's --rtr-listen), send
a Reset Query and print the session, the serial, the timers and every VRP
(prefix, max length, origin AS) of the answer. A cache of a lower version is
asked again in its version. --addr defaults to $` + envRTR + `.`,
		Example: "  keymesh rtr dump --addr 127.0.0.1:8323\n  keymesh rtr dump --addr 127.0.0.1:8323 --rtr-version 0 --output json",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if addr == "" {
				addr = a.getenv(envRTR)
			}
			if addr == "" {
				return usagef("--addr is required (or set %s): a root's --rtr-addr or an agent's --rtr-listen", envRTR)
			}
			if err := checkAddr("addr", addr); err != nil {
				return err
			}
			if version > rtr.MaxVersion {
				return usagef("--rtr-version %d: this client speaks 0 and 1", version)
			}
			if timeout <= 0 {
				return usagef("--timeout must be positive, got %s", timeout)
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			d, err := rtr.Fetch(ctx, addr, version, 0)
			var re *rtr.ReportError
			switch {
			case errors.As(err, &re) && re.Code == rtr.CodeNoDataAvailable:
				return fmt.Errorf("the cache at %s has no data yet (its root or agent is still catching up); ask again", addr)
			case errors.Is(err, context.DeadlineExceeded):
				return fmt.Errorf("the cache at %s did not answer within %s; is it the --rtr-addr of a running root?", addr, timeout)
			case err != nil:
				return fmt.Errorf("rtr dump %s: %w", addr, err)
			}
			out := rtrDumpOutput{Addr: addr, Version: d.Version, Session: d.Session, Serial: d.Serial,
				Refresh: d.Timers.Refresh, Retry: d.Timers.Retry, Expire: d.Timers.Expire, VRPs: []rtrVRPJSON{}}
			for _, v := range d.VRPs {
				out.VRPs = append(out.VRPs, rtrVRPJSON{Prefix: v.Prefix.String(), MaxLength: v.MaxLen, ASN: v.ASN})
			}
			return a.emit(out, func(w io.Writer) {
				fmt.Fprintf(w, "cache %s: version %d, session %d, serial %d", out.Addr, out.Version, out.Session, out.Serial)
				if out.Version > 0 {
					fmt.Fprintf(w, ", refresh %ds, retry %ds, expire %ds", out.Refresh, out.Retry, out.Expire)
				}
				fmt.Fprintf(w, "; %d VRPs\n", len(out.VRPs))
				if len(out.VRPs) == 0 {
					return
				}
				var rows [][]string
				for _, v := range out.VRPs {
					rows = append(rows, []string{v.Prefix, strconv.Itoa(int(v.MaxLength)), "AS" + strconv.FormatUint(uint64(v.ASN), 10)})
				}
				table(w, []string{"PREFIX", "MAX", "ORIGIN"}, rows)
			})
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&addr, "addr", "", "host:port of the RTR cache (default $"+envRTR+")")
	fl.Uint8Var(&version, "rtr-version", rtr.MaxVersion, "protocol version to ask in: 1 (RFC 8210) or 0 (RFC 6810)")
	fl.DurationVar(&timeout, "timeout", 10*time.Second, "how long to wait for the whole answer")
	return cmd
}
