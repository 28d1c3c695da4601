package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/keymesh/keymesh/ca"
	"github.com/keymesh/keymesh/cluster"
	"github.com/keymesh/keymesh/cluster/client"
)

// Environment variables read by client commands.
const (
	envServer     = "KEYMESH_SERVER"
	envCAFile     = "KEYMESH_CA_FILE"
	envCredential = "KEYMESH_CREDENTIAL"
)

// serverFileName is the file in a root server's data directory that names
// its addresses (written by cluster; its presence means "initialised").
const serverFileName = "server.json"

// connFlags are the flags by which a client command finds its server.
type connFlags struct {
	server     string
	caFile     string
	credential string
	dataDir    string
}

func (f *connFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.server, "server", "", "API address (host:port) of any root server [$"+envServer+"]")
	fl.StringVar(&f.caFile, "ca-file", "", "PEM file with the AS root certificate(s) to trust [$"+envCAFile+"]")
	fl.StringVar(&f.credential, "credential", "", "admin credential (PEM certificate chain and key) [$"+envCredential+"]")
	fl.StringVar(&f.dataDir, "data-dir", "", "data directory of a local root server: its address, roots and admin credential")
}

// conn is where a client command connects, resolved from flags, the data
// directory and the environment, in that order.
type conn struct {
	server     string
	caFile     string
	credential string
}

func (a *app) resolve(f connFlags) (conn, error) {
	var fromDir conn
	if f.dataDir != "" {
		addr, err := readAPIAddr(f.dataDir)
		if err != nil {
			return conn{}, err
		}
		fromDir = conn{server: addr, caFile: cluster.RootsPath(f.dataDir), credential: cluster.CredentialPath(f.dataDir)}
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
	return conn{
		server:     pick(f.server, fromDir.server, envServer),
		caFile:     pick(f.caFile, fromDir.caFile, envCAFile),
		credential: pick(f.credential, fromDir.credential, envCredential),
	}, nil
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
	cl, err := client.New(client.Config{Server: addr, CAFile: c.caFile, Credential: c.credential, Timeout: timeout})
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
		ae      *cluster.APIError
		unknown x509.UnknownAuthorityError
		verify  *tls.CertificateVerificationError
		host    x509.HostnameError
		opErr   *net.OpError
	)
	switch {
	case errors.As(err, &ae):
		msg := fmt.Sprintf("%s: %s (HTTP %d, %s)", hostPort(c.server), ae.Message, ae.Status, ae.Code)
		switch ae.Status {
		case http.StatusUnauthorized:
			if !strings.Contains(ae.Message, "credential") {
				msg += "; pass --credential or set " + envCredential
			}
		case http.StatusForbidden:
			if ae.Code == "forbidden" {
				msg += "; use an admin credential (--credential, " + envCredential + ")"
			}
		case http.StatusServiceUnavailable:
			if !strings.Contains(ae.Message, "root status") {
				msg += "; check the cluster with `keymesh root status`"
			}
		}
		return errors.New(msg)
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
