package cluster

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/keymesh/keymesh/ca"
)

// Files of a root server's data directory. Keys are 0600; the directory 0700.
const (
	fileServer     = "server.json"          // who this server is (written last: its presence means "initialised")
	fileRoots      = "ca.pem"               // AS root certificate(s): the trust anchor for clients
	fileSealKey    = "seal.key"             // AES-256 key that unseals the AS root key held in the replicated state
	fileIssuerKey  = "issuer.key"           // this server's issuing key
	fileIssuerCert = "issuer.pem"           // this server's issuing intermediate
	fileTLSKey     = "tls.key"              // key of the Raft/API certificate
	fileTLSCert    = "tls.pem"              // Raft/API certificate chain (leaf, intermediate)
	fileCredential = "admin-credential.pem" // admin client certificate chain and key, for the CLI
	fileAdminToken = "admin.token"          // the system admin token minted at bootstrap (0600)
	dirRaft        = "raft"                 // wal/ (Raft log and stable store, logstore.go) and snapshots/
)

// ErrDataDirInUse is returned when bootstrap or join is pointed at a data
// directory that already holds a server.
var ErrDataDirInUse = errors.New("cluster: data directory already holds a root server")

// ErrNoServer is returned by Open for a data directory without a server.
var ErrNoServer = errors.New("cluster: data directory holds no root server")

// serverFile is the content of server.json.
type serverFile struct {
	Version  int    `json:"version"`
	Name     string `json:"name"`
	Network  string `json:"network"`
	RaftAddr string `json:"raft_addr"` // where Raft listens
	// RaftAdvertise is the address other servers dial for Raft when it is
	// not RaftAddr (a proxy or NAT in front); empty means RaftAddr.
	RaftAdvertise string `json:"raft_advertise,omitempty"`
	APIAddr       string `json:"api_addr"`
	// JoinAddr is the API address a joined server was admitted through; it
	// asks there again to become a voter if it stopped before that finished.
	JoinAddr string `json:"join_addr,omitempty"`
}

// material is the key material of one root server.
type material struct {
	roots      []*x509.Certificate
	sealKey    []byte
	sealNext   []byte // seal.key.next, when a rotation was under way
	issuer     ca.Signer
	tlsCert    tls.Certificate
	credential []byte // PEM: admin certificate, its issuer, its key

	admin ca.Signer // the admin credential, in memory at bootstrap and join
}

type dataDir string

func (d dataDir) path(name string) string { return filepath.Join(string(d), name) }

// CredentialPath is where the admin credential of a server in dir is kept.
func CredentialPath(dir string) string { return dataDir(dir).path(fileCredential) }

// AdminTokenPath is where bootstrap leaves the system admin token.
func AdminTokenPath(dir string) string { return dataDir(dir).path(fileAdminToken) }

// RootsPath is where the AS root certificates of a server in dir are kept.
func RootsPath(dir string) string { return dataDir(dir).path(fileRoots) }

// prepare makes sure d can take a new server and returns a function that
// undoes everything created in it, for a bootstrap or join that fails.
func (d dataDir) prepare() (cleanup func(), err error) {
	entries, err := os.ReadDir(string(d))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(string(d), 0o700); err != nil {
			return nil, fmt.Errorf("cluster: create data directory: %w", err)
		}
		return func() { os.RemoveAll(string(d)) }, nil
	case err != nil:
		return nil, fmt.Errorf("cluster: read data directory: %w", err)
	}
	for _, e := range entries {
		if e.Name() == fileServer || e.Name() == dirRaft {
			if sf, err := d.readServer(); err == nil {
				return nil, fmt.Errorf("%w: %s is server %q of network %q; start it with `keymesh root start --data-dir %s`",
					ErrDataDirInUse, d, sf.Name, sf.Network, d)
			}
			return nil, fmt.Errorf("%w: %s holds Raft data; choose an empty directory", ErrDataDirInUse, d)
		}
	}
	if len(entries) > 0 {
		return nil, fmt.Errorf("cluster: data directory %s is not empty; choose an empty or new directory", d)
	}
	return func() {
		entries, _ := os.ReadDir(string(d))
		for _, e := range entries {
			os.RemoveAll(d.path(e.Name()))
		}
	}, nil
}

// advertise is the Raft address other servers use.
func (sf serverFile) advertise() string {
	if sf.RaftAdvertise != "" {
		return sf.RaftAdvertise
	}
	return sf.RaftAddr
}

func (d dataDir) readServer() (serverFile, error) {
	var sf serverFile
	b, err := os.ReadFile(d.path(fileServer))
	if errors.Is(err, fs.ErrNotExist) {
		return sf, fmt.Errorf("%w: %s has no %s; make one with `keymesh root bootstrap` or `keymesh root join`", ErrNoServer, d, fileServer)
	}
	if err != nil {
		return sf, fmt.Errorf("cluster: read %s: %w", fileServer, err)
	}
	if err := json.Unmarshal(b, &sf); err != nil {
		return sf, fmt.Errorf("cluster: %s is damaged: %w", d.path(fileServer), err)
	}
	if sf.Version != 1 || sf.Name == "" || sf.Network == "" || sf.RaftAddr == "" || sf.APIAddr == "" {
		return sf, fmt.Errorf("cluster: %s is incomplete or of an unknown version", d.path(fileServer))
	}
	return sf, nil
}

// writeMaterial stores the keys and certificates. server.json, the marker of
// a complete data directory, is written by writeServer once the server runs.
func (d dataDir) writeMaterial(m material) error {
	if err := os.MkdirAll(string(d), 0o700); err != nil {
		return fmt.Errorf("cluster: create data directory: %w", err)
	}
	if err := ca.WriteCertsFile(d.path(fileRoots), m.roots...); err != nil {
		return err
	}
	if err := ca.WriteSealKeyFile(d.path(fileSealKey), m.sealKey); err != nil {
		return err
	}
	if err := ca.WriteKeyFile(d.path(fileIssuerKey), m.issuer.Key); err != nil {
		return err
	}
	if err := ca.WriteCertsFile(d.path(fileIssuerCert), m.issuer.Cert); err != nil {
		return err
	}
	signer, err := signerOf(m.tlsCert)
	if err != nil {
		return err
	}
	if err := ca.WriteKeyFile(d.path(fileTLSKey), signer); err != nil {
		return err
	}
	if err := writeFileAtomic(d.path(fileTLSCert), certChainPEM(m.tlsCert.Certificate), 0o644); err != nil {
		return err
	}
	return writeFileAtomic(d.path(fileCredential), m.credential, 0o600)
}

func (d dataDir) writeServer(sf serverFile) error {
	sf.Version = 1
	b, err := json.MarshalIndent(sf, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(d.path(fileServer), append(b, '\n'), 0o644)
}

func (d dataDir) load() (serverFile, material, error) {
	var m material
	sf, err := d.readServer()
	if err != nil {
		return sf, m, err
	}
	if m.roots, err = ca.ReadCertsFile(d.path(fileRoots)); err != nil {
		return sf, m, err
	}
	if m.sealKey, err = ca.ReadSealKeyFile(d.path(fileSealKey)); err != nil {
		return sf, m, err
	}
	if next, err := ca.ReadSealKeyFile(d.path(fileSealNext)); err == nil {
		m.sealNext = next
	} else if !errors.Is(err, fs.ErrNotExist) {
		return sf, m, err
	}
	if m.issuer.Key, err = ca.ReadKeyFile(d.path(fileIssuerKey)); err != nil {
		return sf, m, err
	}
	issuerCerts, err := ca.ReadCertsFile(d.path(fileIssuerCert))
	if err != nil {
		return sf, m, err
	}
	m.issuer.Cert = issuerCerts[0]
	tlsKey, err := ca.ReadKeyFile(d.path(fileTLSKey))
	if err != nil {
		return sf, m, err
	}
	tlsCerts, err := ca.ReadCertsFile(d.path(fileTLSCert))
	if err != nil {
		return sf, m, err
	}
	m.tlsCert = tlsCertificate(tlsCerts, tlsKey)
	return sf, m, nil
}

func certChainPEM(chain [][]byte) []byte {
	var out []byte
	for _, der := range chain {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	return out
}

// writeFileAtomic writes through a temporary file and a rename, so a crash
// leaves either the old file or the new one.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("cluster: write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("cluster: write %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("cluster: write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("cluster: write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("cluster: write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("cluster: write %s: %w", path, err)
	}
	return nil
}
