package main

import (
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/keymesh/keymesh/cluster/api"
	"github.com/keymesh/keymesh/identity"
	"github.com/keymesh/keymesh/identity/policy"
)

// verdict is what `keymesh token verify` and `keymesh authorize` print
// about a token.
type verdict struct {
	Valid      bool            `json:"valid"`
	Reason     string          `json:"reason,omitempty"`
	Message    string          `json:"message,omitempty"`
	Node       string          `json:"node,omitempty"`
	Network    string          `json:"network,omitempty"`
	Principal  string          `json:"principal,omitempty"`
	KID        string          `json:"kid,omitempty"`
	Bound      bool            `json:"bound,omitempty"`
	ExpiresAt  time.Time       `json:"expires_at,omitzero"`
	Claims     json.RawMessage `json:"claims,omitempty"`
	Actions    []policy.Action `json:"actions,omitempty"`
	VerifiedBy string          `json:"verified_by"` // "agent <socket>" or "root server <host:port>"
	Index      uint64          `json:"index,omitempty"`
}

// verdictOf makes the printed form of a root server's answer.
func verdictOf(v api.Verification, token, by string) verdict {
	out := verdict{Valid: v.Valid, Reason: v.Reason, Message: v.Message, Node: v.Node, Network: v.Network,
		Principal: v.Principal, KID: v.KID, Actions: v.Actions, VerifiedBy: by}
	out.addClaims(token)
	return out
}

// addClaims shows the claims of a token found valid. They are read from
// the token itself: its signature was just checked.
func (v *verdict) addClaims(token string) {
	if !v.Valid {
		return
	}
	t, err := identity.ParseUnverified(token, 0)
	if err != nil {
		return
	}
	v.ExpiresAt, v.Bound = t.Claims.Expiry.UTC(), t.Claims.CertThumbprint != ""
	if b, err := t.Claims.MarshalJSON(); err == nil {
		v.Claims = b
	}
}

// refusalPrefix is how identity words a refusal: "identity: token refused
// (reason): ".
var refusalPrefix = regexp.MustCompile(`^(identity: )?token refused \([a-z_]+\): `)

// refused is the one-line error of a refused token.
func (v verdict) refused() error {
	msg := refusalPrefix.ReplaceAllString(v.Message, "")
	msg = strings.ReplaceAll(msg, "identity: ", "")
	if msg == "" {
		msg = "no reason given"
	}
	reason := v.Reason
	if reason == "" {
		reason = "invalid"
	}
	return fmt.Errorf("token refused: %s: %s", reason, msg)
}

// show prints a verdict: what a valid token says, or, for a refused one,
// the JSON object (with --output json) and the error.
func (a *app) show(v verdict, text func(w io.Writer)) error {
	if !v.Valid {
		if a.output == "json" {
			if err := a.emit(v, nil); err != nil {
				return err
			}
		}
		return v.refused()
	}
	return a.emit(v, text)
}

// validLine is the text form of a valid token.
func (v verdict) validLine(w io.Writer) {
	bound := ""
	if v.Bound {
		bound = ", bound to a certificate"
	}
	fmt.Fprintf(w, "valid token of %s %s (network %s): principal %s, kid %s, expires %s%s; verified by %s\n",
		v.kind(), v.Node, v.Network, v.Principal, v.KID, timeText(v.ExpiresAt), bound, v.VerifiedBy)
}

// kind is what minted the token: node, admin or root (from its sub).
func (v verdict) kind() string {
	var c struct {
		Sub string `json:"sub"`
	}
	if json.Unmarshal(v.Claims, &c) == nil {
		if id, err := identity.ParseSPIFFEID(c.Sub); err == nil {
			return id.Kind
		}
	}
	return "node"
}

func (a *app) authorizeCmd() *cobra.Command {
	var (
		cf  connFlags
		aud string
	)
	cmd := &cobra.Command{
		Use:   "authorize TOKEN|-",
		Short: "Ask a root server which actions a token's principal may take",
		Long: `Ask a root server to verify TOKEN (- reads it from standard input) and list the
actions that its principal may take under the policies in force (see
"keymesh policy get"). The token must name the root API's audience, or --aud.
A refused token exits 1 with the reason on one line.`,
		Example: "  keymesh authorize - < /var/lib/keymesh/r1/admin.token",
		Args:    exactArgs("TOKEN"),
		RunE: func(cmd *cobra.Command, args []string) error {
			tok, err := a.tokenArg(args[0])
			if err != nil {
				return err
			}
			cl, c, err := a.client(cf)
			if err != nil {
				return err
			}
			defer cl.Close()
			res, err := cl.Authorize(cmd.Context(), tok, aud)
			if err != nil {
				return c.explain(err)
			}
			v := verdictOf(res, tok, "root server "+hostPort(c.server))
			if v.Valid && v.Actions == nil {
				v.Actions = []policy.Action{}
			}
			return a.show(v, func(w io.Writer) {
				fmt.Fprintf(w, "principal %s of %s %s (network %s, kid %s, expires %s) may take %d action(s):\n",
					v.Principal, v.kind(), v.Node, v.Network, v.KID, timeText(v.ExpiresAt), len(v.Actions))
				for _, act := range v.Actions {
					fmt.Fprintf(w, "  %s\n", act)
				}
			})
		},
	}
	cf.register(cmd)
	cmd.Flags().StringVar(&aud, "aud", "", "audience the token must name (default: the root API's)")
	return cmd
}
