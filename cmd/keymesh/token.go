package main

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/keymesh/keymesh/ca"
	"github.com/keymesh/keymesh/cluster/agent"
	"github.com/keymesh/keymesh/identity"
	"github.com/keymesh/keymesh/identity/trust"
)

// How `keymesh token` reaches a node's agent.
const (
	viaAgent   = "agent"
	viaDataDir = "data-dir"
)

// agentCallTimeout bounds one call to a node agent's local API.
const agentCallTimeout = 10 * time.Second

func (a *app) tokenCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Node tokens: mint under a node's own key, verify",
	}
	groupCmd(cmd)
	cmd.AddCommand(a.tokenMintCmd(), a.tokenVerifyCmd())
	return cmd
}

// mintOutput is what `keymesh token mint -o json` prints.
type mintOutput struct {
	Token     string          `json:"token"`
	KID       string          `json:"kid"`
	JTI       string          `json:"jti"`
	ExpiresAt time.Time       `json:"expires_at"`
	Claims    json.RawMessage `json:"claims"`
	Via       string          `json:"via"` // "agent" or "data-dir"
}

func (a *app) tokenMintCmd() *cobra.Command {
	var (
		dataDir, principal string
		auds               []string
		ttl                time.Duration
		bind               bool
	)
	cmd := &cobra.Command{
		Use:   "mint --data-dir DIR --aud AUDIENCE",
		Short: "Mint a token under the node's own key; prints the token alone",
		Long: `Mint a JWT signed by the node's own key, for the audiences given. When the
node's agent runs ("keymesh node run"), it mints; otherwise the token is
minted here from the data directory's key and certificate. No root server is
asked either way. A node that is a member of several networks has a key and
certificate in each: --network chooses which mints.

The token is printed alone on stdout, for scripts: tok=$(keymesh token mint ...).
With --output json: {"token", "kid", "jti", "expires_at", "claims", "via"}.

The principal defaults to the node's own (from the trust state the agent
follows, else NODE). A token never outlives the node's certificate.`,
		Example: "  tok=$(keymesh token mint --data-dir /var/lib/keymesh/node --aud spiffe://mainnet.example.net/node/edge-2)\n" +
			"  keymesh token mint --data-dir /var/lib/keymesh/node --aud api --ttl 1h --bind-cert -o json",
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := require([2]string{"data-dir", dataDir}); err != nil {
				return err
			}
			if len(auds) == 0 {
				return usagef("--aud is required: name who the token is for (repeat for several)")
			}
			for _, aud := range auds {
				if strings.TrimSpace(aud) == "" {
					return usagef("--aud must not be empty")
				}
			}
			if ttl < 0 {
				return usagef("--ttl must be positive, got %s", ttl)
			}
			p := strings.ToUpper(principal)
			if p != "" && !contains(principals, p) {
				return usagef("--principal must be one of %s, not %q", strings.Join(principals, ", "), principal)
			}
			dir, err := memberDir(cmd, dataDir)
			if err != nil {
				return err
			}
			out, err := mintToken(cmd.Context(), dir, agent.MintRequest{Audience: auds, TTL: durationText(ttl), BindCert: bind, Principal: p}, a.now)
			if err != nil {
				return err
			}
			if t, err := identity.ParseUnverified(out.Token, 0); err == nil {
				out.JTI = t.Claims.ID
			}
			return a.emit(out, func(w io.Writer) { fmt.Fprintln(w, out.Token) })
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&dataDir, "data-dir", "", "the node's data directory (made by `keymesh node join`)")
	fl.StringArrayVar(&auds, "aud", nil, "audience: who the token is for (required; repeat for several)")
	fl.DurationVar(&ttl, "ttl", 0, "lifetime (default 10m, at most 24h; never past the certificate's expiry)")
	fl.StringVar(&principal, "principal", "", "principal to claim: "+strings.Join(principals, ", ")+" (default: the node's)")
	fl.BoolVar(&bind, "bind-cert", false, "bind the token to the node's current TLS certificate (cnf x5t#S256)")
	networkFlag(cmd)
	cmd.Flags().Lookup("network").Usage = "mint under the node's key of this network, if it is a member of several (default: the first it joined)"
	return cmd
}

// mintToken asks the node's agent for a token, or mints it from the data
// directory when no agent answers.
func mintToken(ctx context.Context, dir string, req agent.MintRequest, now func() time.Time) (mintOutput, error) {
	st, err := agent.ReadState(dir)
	if err != nil {
		return mintOutput{}, nodeDirError(dir, err)
	}
	if agentSocketExists(dir) {
		lc := agent.NewLocalClient(agent.SocketPath(dir))
		defer lc.Close()
		actx, cancel := context.WithTimeout(ctx, agentCallTimeout)
		defer cancel()
		res, err := lc.Mint(actx, req)
		switch {
		case err == nil:
			return mintOutput{Token: res.Token, KID: res.KID, ExpiresAt: res.ExpiresAt.UTC(), Claims: res.Claims, Via: viaAgent}, nil
		case !errors.Is(err, agent.ErrNoAgent):
			return mintOutput{}, explainAgent("mint", err)
		}
	}
	return mintDirect(dir, st, req, now)
}

// mintDirect mints under the key and certificate in dir.
func mintDirect(dir string, st agent.State, req agent.MintRequest, now func() time.Time) (mintOutput, error) {
	cert, err := agent.Certificate(dir)
	if err != nil {
		return mintOutput{}, fmt.Errorf("node %s: %w", st.NodeID, err)
	}
	key, ok := cert.PrivateKey.(crypto.Signer)
	if !ok {
		return mintOutput{}, fmt.Errorf("node %s: the key in %s cannot sign", st.NodeID, agent.KeyPath(dir))
	}
	var chain []*x509.Certificate
	for _, der := range cert.Certificate[1:] {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return mintOutput{}, fmt.Errorf("node %s: %s: %w", st.NodeID, agent.CertPath(dir), err)
		}
		chain = append(chain, c)
	}
	m, err := identity.NewMinter(identity.MinterConfig{Key: key, Cert: cert.Leaf, Chain: chain, Clock: now})
	if err != nil {
		return mintOutput{}, fmt.Errorf("node %s: %w", st.NodeID, err)
	}
	mr := identity.MintRequest{Audience: req.Audience, Principal: identity.Principal(req.Principal)}
	if req.TTL != "" {
		if mr.TTL, err = time.ParseDuration(req.TTL); err != nil {
			return mintOutput{}, usagef("--ttl: %w", err)
		}
	}
	if mr.Principal == "" {
		mr.Principal = nodePrincipal(dir, st)
	}
	if req.BindCert {
		mr.BindCert = cert.Leaf
	}
	tok, claims, err := m.Mint(mr)
	if err != nil {
		return mintOutput{}, fmt.Errorf("node %s: %w", st.NodeID, err)
	}
	cj, err := claims.MarshalJSON()
	if err != nil {
		return mintOutput{}, err
	}
	return mintOutput{Token: tok, KID: m.KID(), ExpiresAt: claims.Expiry.UTC(), Claims: cj, Via: viaDataDir}, nil
}

// nodePrincipal is the node's principal as the trust state its agent last
// followed (trust.json) records it; NODE when the agent never ran.
func nodePrincipal(dir string, st agent.State) identity.Principal {
	doc, err := agent.ReadTrustFile(dir, st.Network)
	if err != nil {
		return identity.PrincipalNode
	}
	state, err := trust.NewState(doc)
	if err != nil {
		return identity.PrincipalNode
	}
	if n, ok := state.Node(st.NodeID); ok && n.Principal != "" {
		return identity.Principal(n.Principal)
	}
	return identity.PrincipalNode
}

// agentSocketExists reports whether dir has an agent socket (a running
// agent, or one left by an agent that died).
func agentSocketExists(dir string) bool {
	fi, err := os.Lstat(agent.SocketPath(dir))
	return err == nil && fi.Mode()&fs.ModeSocket != 0
}

// nodeDirError says that dir holds no node.
func nodeDirError(dir string, err error) error {
	if errors.Is(err, agent.ErrNoNode) || errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s holds no node: pass the data directory of `keymesh node join` (--data-dir)", dir)
	}
	return err
}

// explainAgent turns an error of a node agent's local API into one line.
func explainAgent(what string, err error) error {
	var le *agent.LocalAPIError
	if errors.As(err, &le) {
		return fmt.Errorf("the node agent refused to %s: %s (%d, %s)", what, le.Message, le.Status, le.Code)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("the node agent did not answer within %s; is it stuck? (`keymesh node run` logs on stderr)", agentCallTimeout)
	}
	return err
}

func (a *app) tokenVerifyCmd() *cobra.Command {
	var (
		cf            connFlags
		aud, peerCert string
	)
	cmd := &cobra.Command{
		Use:   "verify TOKEN|-",
		Short: "Verify a token: with the node's agent, else with a root server",
		Long: `Verify TOKEN (- reads it from standard input).

With --data-dir of a node whose agent runs, the agent verifies it locally
against the trust state it follows (default audience: the node's SPIFFE ID).
Otherwise a root server verifies it: the one the node registered with, the
one of a root server's --data-dir, or --server (default audience: the root
API's).

A token bound to a certificate (minted with --bind-cert) verifies only with
the certificate it is presented with: --peer-cert, checked by the agent.

A valid token exits 0 and prints its node, principal, kid and expiry; a
refused one exits 1 with "token refused: <reason>: <message>".`,
		Example: "  keymesh token verify \"$tok\" --aud api --data-dir /var/lib/keymesh/node\n" +
			"  keymesh token mint --data-dir n1 --aud api | keymesh token verify - --aud api --data-dir n1",
		Args: exactArgs("TOKEN"),
		RunE: func(cmd *cobra.Command, args []string) error {
			tok, err := a.tokenArg(args[0])
			if err != nil {
				return err
			}
			var peer []byte
			if peerCert != "" {
				b, err := a.readInput(peerCert, "the peer certificate")
				if err != nil {
					return err
				}
				certs, err := ca.ParseCertsPEM(b)
				if err != nil || len(certs) == 0 {
					return fmt.Errorf("--peer-cert %s holds no PEM certificate", peerCert)
				}
				peer = ca.EncodeCertsPEM(certs[0]) // the leaf of a chain
			}
			ctx := cmd.Context()
			if cf.dataDir != "" && isNodeDir(cf.dataDir) {
				dir, err := filepath.Abs(cf.dataDir)
				if err != nil {
					return err
				}
				v, ok, err := verifyWithAgent(ctx, dir, agent.VerifyRequest{Token: tok, Audience: audience(aud), PeerCert: string(peer)})
				if err != nil {
					return err
				}
				if !ok && peer != nil {
					return fmt.Errorf("no agent answers on %s, and root servers do not check certificate bindings (--peer-cert); start it with `keymesh node run --data-dir %s`",
						agent.SocketPath(dir), shellQuote(dir))
				}
				if !ok {
					st, err := agent.ReadState(dir)
					if err != nil {
						return nodeDirError(dir, err)
					}
					// The node's root server, unless flags say otherwise.
					cf.dataDir = ""
					if cf.server == "" {
						cf.server = st.Server
					}
					if cf.caFile == "" {
						cf.caFile = agent.RootsPath(dir)
					}
					if v, err = a.verifyWithServer(ctx, cf, tok, aud); err != nil {
						return err
					}
				}
				return a.show(v, v.validLine)
			}
			if peer != nil {
				return usagef("--peer-cert needs --data-dir of a node whose agent runs: root servers do not check certificate bindings")
			}
			v, err := a.verifyWithServer(ctx, cf, tok, aud)
			if err != nil {
				return err
			}
			return a.show(v, v.validLine)
		},
	}
	cf.register(cmd)
	cmd.Flags().Lookup("data-dir").Usage = "data directory of a node (its agent verifies, else its root server) or of a local root server"
	cmd.Flags().StringVar(&aud, "aud", "", "audience the token must name (default: the node's SPIFFE ID with an agent, else the root API's)")
	cmd.Flags().StringVar(&peerCert, "peer-cert", "", "PEM certificate (or chain: its first) the token was presented with, for a bound token (agent only)")
	return cmd
}

// isNodeDir reports whether dir holds a node (node.json) rather than a
// root server.
func isNodeDir(dir string) bool {
	_, err := agent.ReadState(dir)
	if err == nil {
		return true
	}
	_, err = os.Stat(filepath.Join(dir, serverFileName))
	return err != nil // neither: let the node side say what is missing
}

// audience is the --aud of verify as the agent takes it.
func audience(aud string) agent.Audience {
	if aud == "" {
		return nil
	}
	return agent.Audience{aud}
}

// verifyWithAgent asks the node's agent; ok is false when no agent answers.
func verifyWithAgent(ctx context.Context, dir string, req agent.VerifyRequest) (verdict, bool, error) {
	if !agentSocketExists(dir) {
		return verdict{}, false, nil
	}
	lc := agent.NewLocalClient(agent.SocketPath(dir))
	defer lc.Close()
	ctx, cancel := context.WithTimeout(ctx, agentCallTimeout)
	defer cancel()
	res, err := lc.Verify(ctx, req)
	switch {
	case errors.Is(err, agent.ErrNoAgent):
		return verdict{}, false, nil
	case err != nil:
		return verdict{}, false, explainAgent("verify", err)
	}
	v := verdict{Valid: res.Valid, Reason: res.Reason, Message: res.Message, Node: res.Node, Network: res.Network,
		Principal: res.Principal, KID: res.KID, VerifiedBy: "agent " + agent.SocketPath(dir), Index: res.Index}
	v.addClaims(req.Token)
	return v, true, nil
}

// verifyWithServer asks a root server.
func (a *app) verifyWithServer(ctx context.Context, cf connFlags, tok, aud string) (verdict, error) {
	cl, c, err := a.client(cf)
	if err != nil {
		return verdict{}, err
	}
	defer cl.Close()
	res, err := cl.Verify(ctx, tok, aud)
	if err != nil {
		return verdict{}, c.explain(err)
	}
	return verdictOf(res, tok, "root server "+hostPort(c.server)), nil
}
