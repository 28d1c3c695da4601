package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/keymesh/keymesh/cluster/client"
)

func (a *app) healthCmd() *cobra.Command {
	var cf connFlags
	cmd := &cobra.Command{
		Use:   "health",
		Short: "Ask a root server whether it is up and knows a leader",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, c, err := a.client(cf)
			if err != nil {
				return err
			}
			defer cl.Close()
			h, err := cl.Health(cmd.Context())
			if errors.Is(err, client.ErrNoLeader) {
				return fmt.Errorf("root server %s at %s is up but knows no leader: the cluster is electing one or has lost its quorum; check `keymesh root status`",
					orDash(h.Name), hostPort(c.server))
			}
			if err != nil {
				return c.explain(err)
			}
			return a.emit(h, func(w io.Writer) {
				fmt.Fprintf(w, "%s: root server %s of network %s, leader %s, applied index %d\n",
					h.Status, h.Name, h.Network, orDash(h.Leader), h.AppliedIndex)
			})
		},
	}
	cf.register(cmd)
	return cmd
}
