package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/keymesh/keymesh/ca"
	"github.com/keymesh/keymesh/cluster"
	"github.com/keymesh/keymesh/cluster/api"
	"github.com/keymesh/keymesh/cluster/client"
)

// Environment variables read by client commands.
const (
	envServer     = "KEYMESH_SERVER"
	envCAFile     = "KEYMESH_CA_FILE"
	envCredential = "KEYMESH_CREDENTIAL"
	envToken      = "KEYMESH_TOKEN"
)

// maxTokenFile bounds a token file (tokens are a few hundred bytes).
const maxTokenFile = 64 << 10

// serverFileName is the file in a root server's data directory that names
// its addresses (written by cluster; its presence means "initialised").
const serverFileName = "server.json"

// connFlags are the flags by which a client command finds its server.
type connFlags struct {
	server     string
	caFile     string
	credential string
	token      string
	tokenFile  string
	dataDir    string
}

func (f *connFlags) register(cmd *cobra.Command) {
	f.registerCA(cmd, true)
}

// registerCA registers the flags, --ca-file only with withCA (a command
// whose --ca-file means something else takes the API's CA from --data-dir
// or the environment).
func (f *connFlags) registerCA(cmd *cobra.Command, withCA bool) {
	fl := cmd.Flags()
	fl.StringVar(&f.server, "server", "", "API address (host:port) of any root server [$"+envServer+"]")
	if withCA {
		fl.StringVar(&f.caFile, "ca-file", "", "PEM file with the AS root certificate(s) to trust [$"+envCAFile+"]")
	}
	fl.StringVar(&f.credential, "credential", "", "admin credential (PEM certificate chain and key) [$"+envCredential+"]")
	fl.StringVar(&f.token, "token", "", "bearer token (a keymesh JWT, e.g. the admin.token of bootstrap) [$"+envToken+"]")
	fl.StringVar(&f.tokenFile, "token-file", "", "file holding the bearer token (instead of --token)")
	fl.StringVar(&f.dataDir, "data-dir", "", "data directory of a local root server: its address, roots and admin credential (else its admin.token)")
}

// conn is where a client command connects, resolved from flags, the data
// directory and the environment, in that order.
type conn struct {
	server     string
	caFile     string
	credential string
	token      string // bearer token, sent with every call
	tokenFrom  string // where the token came from, for messages
}

// auth is how a client command authenticates: a client certificate, a
// bearer token, or both (a token bound to the certificate).
type auth struct {
	credential string
	token      string
	tokenFrom  string
}

func (x auth) empty() bool { return x.credential == "" && x.token == "" }

// resolve finds server, CA and authentication. Server and CA are picked one
// by one (flag, data dir, environment); authentication is taken whole from
// the first of these levels that offers any, so that a credential flag or
// --data-dir is never mixed with a token from the environment. A root
// server's data directory offers its admin credential, or, without one, the
// system admin token bootstrap left there.
func (a *app) resolve(f connFlags) (conn, error) {
	flagAuth, err := f.flagAuth()
	if err != nil {
		return conn{}, err
	}
	var (
		fromDir conn
		dirAuth auth
	)
	if f.dataDir != "" {
		addr, err := readAPIAddr(f.dataDir)
		if err != nil {
			return conn{}, err
		}
		fromDir = conn{server: addr, caFile: cluster.RootsPath(f.dataDir)}
		dirAuth, err = dataDirAuth(f.dataDir)
		if err != nil {
			return conn{}, err
		}
	}
	pick := func(flag, dir, env string) string {
		switch {
		case flag != "":
			return flag
		case dir != "":
			return dir
		default:
			return a.getenv(env)
		}
	}
	c := conn{
		server: pick(f.server, fromDir.server, envServer),
		caFile: pick(f.caFile, fromDir.caFile, envCAFile),
	}
	envAuth := auth{credential: a.getenv(envCredential), token: strings.TrimSpace(a.getenv(envToken)), tokenFrom: envToken}
	for _, x := range []auth{flagAuth, dirAuth, envAuth} {
		if !x.empty() {
			c.credential, c.token, c.tokenFrom = x.credential, x.token, x.tokenFrom
			break
		}
	}
	return c, nil
}

// flagAuth is the authentication given by flags.
func (f connFlags) flagAuth() (auth, error) {
	x := auth{credential: f.credential}
	switch {
	case f.token != "" && f.tokenFile != "":
		return auth{}, usagef("pass the bearer token by --token or by --token-file, not both")
	case f.token != "":
		x.token, x.tokenFrom = strings.TrimSpace(f.token), "--token"
		if x.token == "" {
			return auth{}, usagef("--token is empty")
		}
	case f.tokenFile != "":
		tok, err := readTokenFile(f.tokenFile)
		if err != nil {
			return auth{}, err
		}
		x.token, x.tokenFrom = tok, "--token-file "+f.tokenFile
	}
	return x, nil
}

// dataDirAuth is the authentication a root server's data directory offers:
// its admin credential, else its system admin token, else (neither there)
// the credential path, so that the client says which file is missing.
func dataDirAuth(dir string) (auth, error) {
	cred := cluster.CredentialPath(dir)
	if _, err := os.Stat(cred); err == nil {
		return auth{credential: cred}, nil
	}
	path := cluster.AdminTokenPath(dir)
	if _, err := os.Stat(path); err != nil {
		return auth{credential: cred}, nil
	}
	tok, err := readTokenFile(path)
	if err != nil {
		return auth{}, err
	}
	return auth{token: tok, tokenFrom: path}, nil
}

// readTokenFile reads a bearer token from path: one line, surrounding
// white space ignored.
func readTokenFile(path string) (string, error) {
	b, err := readLimited(path, maxTokenFile)
	if err != nil {
		return "", fmt.Errorf("reading the token file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("the token file %s is empty", path)
	}
	return tok, nil
}

// readLimited reads a file of at most limit bytes.
func readLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return readAtMost(f, path, limit)
}

// readAtMost reads r to its end, refusing more than limit bytes.
func readAtMost(r io.Reader, name string, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", name, limit)
	}
	return b, nil
}

// client makes an API client for the resolved connection.
func (a *app) client(f connFlags) (*client.Client, conn, error) {
	c, err := a.resolve(f)
	if err != nil {
		return nil, c, err
	}
	cl, err := c.dial(c.server, 0)
	return cl, c, err
}

// dial makes a client for addr with this connection's trust material.
func (c conn) dial(addr string, timeout time.Duration) (*client.Client, error) {
	cl, err := client.New(client.Config{Server: addr, CAFile: c.caFile, Credential: c.credential, Token: c.token, Timeout: timeout})
	if err != nil {
		return nil, err
	}
	return cl, nil
}

// caHash is the CA hash of the first certificate in the CA file.
func (c conn) caHash() (string, error) {
	certs, err := ca.ReadCertsFile(c.caFile)
	if err != nil {
		return "", fmt.Errorf("reading the CA file %s: %w", c.caFile, err)
	}
	return ca.Hash(certs[0]), nil
}

// hostPort strips a URL scheme from a server address for display in
// commands to paste.
func hostPort(server string) string {
	if _, rest, ok := strings.Cut(server, "://"); ok {
		return strings.TrimSuffix(rest, "/")
	}
	return server
}

// readAPIAddr reads the API address of the root server in dir.
func readAPIAddr(dir string) (string, error) {
	path := filepath.Join(dir, serverFileName)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("%s holds no root server (no %s); pass the data directory of a bootstrapped or joined server, or use --server", dir, serverFileName)
	}
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", path, err)
	}
	var sf struct {
		APIAddr string `json:"api_addr"`
	}
	if err := json.Unmarshal(b, &sf); err != nil || sf.APIAddr == "" {
		return "", fmt.Errorf("%s names no api_addr; pass --server instead", path)
	}
	return sf.APIAddr, nil
}

// explain turns an error of an API call into a message that says what to
// do next.
func (c conn) explain(err error) error {
	if err == nil {
		return nil
	}
	var (
		ae      *api.APIError
		unknown x509.UnknownAuthorityError
		verify  *tls.CertificateVerificationError
		host    x509.HostnameError
		opErr   *net.OpError
	)
	switch {
	case errors.As(err, &ae):
		msg := fmt.Sprintf("%s: %s (HTTP %d, %s)", hostPort(c.server), ae.Message, ae.Status, ae.Code)
		switch {
		case errors.Is(err, api.ErrTokenRefused) && c.token != "":
			msg += "; the token came from " + c.tokenFrom
		case errors.Is(err, api.ErrForbidden):
			msg += "; use an admin credential or token (--credential, --token, " + envCredential + ", " + envToken + ")"
		case errors.Is(err, api.ErrUnknownOutcome), errors.Is(err, api.ErrShutdown):
			msg += "; check the cluster with `keymesh root status`"
		}
		return errors.New(msg)
	case errors.Is(err, ca.ErrNotRootServer):
		return fmt.Errorf("%s is not a root server of your network (%v); no credential was sent; check --server (%s)", hostPort(c.server), err, envServer)
	case errors.As(err, &host):
		return fmt.Errorf("%s presents a certificate for other addresses (%v); use the address the server advertises (api_addr in its server.json)", hostPort(c.server), host)
	case errors.As(err, &unknown), errors.As(err, &verify):
		return fmt.Errorf("%s presents a certificate that the CA file %s does not vouch for; is it a server of your network? (check --ca-file, %s)", hostPort(c.server), c.caFile, envCAFile)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("cannot reach %s: connection refused; is a root server running there? (check --server, %s)", hostPort(c.server), envServer)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s did not answer in time; check that it runs and that the cluster has a leader (`keymesh root status`)", hostPort(c.server))
	case errors.As(err, &opErr):
		return fmt.Errorf("cannot reach %s: %v (check --server, %s)", hostPort(c.server), opErr.Err, envServer)
	}
	return err
}
