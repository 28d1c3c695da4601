//go:build peers

package peers

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keymesh/keymesh/test/harness"
)

// etcdMissing is the failure of a run without an etcd binary.
const etcdMissing = "etcd is not installed: make bench-peers installs Debian's etcd-server (apt-get install etcd-server)"

// etcdMembers is the size of the etcd cluster.
const etcdMembers = 3

// etcdTimeout bounds every request of the load and of the readiness poll.
const etcdTimeout = 10 * time.Second

// etcdCluster is three etcd members on loopback, each its own process,
// with mutual TLS on the client and the peer URLs (one CA), and the HTTP
// client of the load that speaks to their v3 JSON gateways.
type etcdCluster struct {
	version string // of `etcd --version`, e.g. "3.4.23"
	debian  string // the etcd-server package's version, "" if not Debian's
	members []*etcdMember
	client  *http.Client
}

// etcdMember is one etcd process.
type etcdMember struct {
	name      string
	clientURL string // https://127.0.0.1:port
	peerURL   string
	logPath   string // its stdout and stderr
	cmd       *exec.Cmd
	done      chan struct{} // closed when the process has exited
	err       error         // of Wait, once done is closed
}

// startEtcd starts three etcd members as processes, with data under dir
// (t.TempDir() by the caller), and returns when the cluster is healthy (a
// PUT through the JSON gateway succeeds on each member). t.Cleanup stops
// them (SIGTERM, then kill) and waits for them.
func startEtcd(t testing.TB, dir string) *etcdCluster {
	t.Helper()
	bin := etcdBinary(t)
	c := &etcdCluster{version: etcdVersion(t, bin), debian: etcdDebianVersion(bin)}
	certs := etcdWriteCerts(t, filepath.Join(dir, "pki"), etcdMembers)
	c.client = etcdClient(t, certs)

	var initial []string
	for k := 1; k <= etcdMembers; k++ {
		m := &etcdMember{
			name:      fmt.Sprintf("etcd%d", k),
			clientURL: "https://" + harness.FreePort(t),
			peerURL:   "https://" + harness.FreePort(t),
		}
		c.members = append(c.members, m)
		initial = append(initial, m.name+"="+m.peerURL)
	}
	token := "bench-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	t.Cleanup(c.stop)
	for k, m := range c.members {
		m.logPath = filepath.Join(dir, m.name+".log")
		logf, err := os.OpenFile(m.logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		m.cmd = exec.Command(bin,
			"--name", m.name,
			"--data-dir", filepath.Join(dir, m.name),
			"--listen-client-urls", m.clientURL,
			"--advertise-client-urls", m.clientURL,
			"--listen-peer-urls", m.peerURL,
			"--initial-advertise-peer-urls", m.peerURL,
			"--initial-cluster", strings.Join(initial, ","),
			"--initial-cluster-state", "new",
			"--initial-cluster-token", token,
			"--cert-file", certs.memberCert[k],
			"--key-file", certs.memberKey[k],
			"--trusted-ca-file", certs.ca,
			"--client-cert-auth",
			"--peer-cert-file", certs.memberCert[k],
			"--peer-key-file", certs.memberKey[k],
			"--peer-trusted-ca-file", certs.ca,
			"--peer-client-cert-auth",
			// 3.4 logs through capnslog by default, which --log-level
			// does not quiet; zap does. stderr, not journald, even under
			// systemd.
			"--logger", "zap",
			"--log-outputs", "stderr",
			"--log-level", "error",
		)
		m.cmd.Stdout, m.cmd.Stderr = logf, logf
		err = m.cmd.Start()
		logf.Close() // the child holds its own descriptor
		if err != nil {
			t.Fatalf("start %s: %v", m.name, err)
		}
		m.done = make(chan struct{})
		go func() {
			m.err = m.cmd.Wait()
			close(m.done)
		}()
	}
	c.awaitReady(t, 30*time.Second)
	return c
}

// etcdBinary is the etcd on PATH, else Debian's /usr/bin/etcd.
func etcdBinary(t testing.TB) string {
	t.Helper()
	if p, err := exec.LookPath("etcd"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/bin/etcd"); err == nil {
		return "/usr/bin/etcd"
	}
	t.Fatal(etcdMissing)
	return ""
}

// etcdVersion is the version `etcd --version` prints ("etcd Version: X").
func etcdVersion(t testing.TB, bin string) string {
	t.Helper()
	out, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil {
		t.Fatalf("%s --version: %v: %s", bin, err, out)
	}
	for line := range strings.Lines(string(out)) {
		if v, ok := strings.CutPrefix(line, "etcd Version:"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("%s --version printed no version: %s", bin, out)
	return ""
}

// etcdDebianVersion is the version of the Debian package etcd-server if
// bin is its binary, else "".
func etcdDebianVersion(bin string) string {
	if p, err := filepath.EvalSymlinks(bin); err != nil || p != "/usr/bin/etcd" {
		return ""
	}
	out, err := exec.Command("dpkg-query", "-W", "-f", "${Version}", "etcd-server").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// awaitReady polls a PUT of key "ready" on every member until each
// succeeded, failing with the members' log tails after timeout or when a
// member exits.
func (c *etcdCluster) awaitReady(t testing.TB, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	ready := make([]bool, len(c.members))
	var last error
	for {
		left := 0
		for k, m := range c.members {
			select {
			case <-m.done:
				t.Fatalf("%s exited before the cluster was healthy: %v\n%s", m.name, m.err, c.tails())
			default:
			}
			if ready[k] {
				continue
			}
			if _, err := c.put(ctx, m, "ready", []byte("1")); err != nil {
				last = err
				left++
				continue
			}
			ready[k] = true
		}
		if left == 0 {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("etcd cluster not healthy after %s (%d of %d members answer no PUT): %v\n%s", timeout, left, len(c.members), last, c.tails())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// stop stops the members: SIGTERM, then a kill for one that has not
// exited after 10 s. The followers go first, together, and the leader
// last: a leader that stops hands leadership to a connected peer and
// waits for it up to etcd's request timeout (7 s), in vain if its peers
// are stopping too. A follower still waits up to 1 s for its peers to
// close their connections to it.
func (c *etcdCluster) stop() {
	lead := c.leader()
	// An idle connection that never carried a request (the transport
	// dials more than it uses) holds a member's HTTP server's Shutdown up
	// to 5 s.
	c.client.CloseIdleConnections()
	var followers []*etcdMember
	for _, m := range c.members {
		if m != lead {
			followers = append(followers, m)
		}
	}
	etcdTerminate(followers)
	if lead != nil {
		etcdTerminate([]*etcdMember{lead})
	}
}

// leader is the member that its peers and itself say leads, nil if none
// answers within 2 s or none leads.
func (c *etcdCluster) leader() *etcdMember {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, m := range c.members {
		if m.done == nil {
			continue
		}
		var st struct {
			Header struct {
				MemberID json.Number `json:"member_id"`
			} `json:"header"`
			Leader json.Number `json:"leader"`
		}
		if err := c.call(ctx, m, "/v3/maintenance/status", struct{}{}, &st); err != nil {
			continue
		}
		if st.Leader != "" && st.Leader == st.Header.MemberID {
			return m
		}
	}
	return nil
}

// etcdTerminate sends SIGTERM to the started members of ms, kills those
// that have not exited after 10 s, and waits for all.
func etcdTerminate(ms []*etcdMember) {
	for _, m := range ms {
		if m.done != nil {
			_ = m.cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	deadline := time.After(10 * time.Second)
	for _, m := range ms {
		if m.done == nil {
			continue
		}
		select {
		case <-m.done:
		case <-deadline:
			_ = m.cmd.Process.Kill()
			<-m.done
		}
	}
}

// tails is the last lines each member wrote.
func (c *etcdCluster) tails() string {
	var b strings.Builder
	for _, m := range c.members {
		out, err := os.ReadFile(m.logPath)
		if err != nil {
			fmt.Fprintf(&b, "--- %s: %v\n", m.name, err)
			continue
		}
		if len(out) > 2048 {
			out = out[len(out)-2048:]
		}
		fmt.Fprintf(&b, "--- %s (%s):\n%s\n", m.name, m.logPath, out)
	}
	return b.String()
}

// Conditions is one line describing how the cluster runs, for the
// benchmark table.
func (c *etcdCluster) Conditions() string {
	build := ""
	if c.debian != "" {
		build = " (Debian " + c.debian + ")"
	}
	return fmt.Sprintf("etcd %s%s, %d members on loopback, mutual TLS on client and peer URLs, fsync on (default), default heartbeat and election, JSON gateway POST /v3/kv/put over HTTPS/1.1 keep-alive, each request to member i%%3 or to the leader, as the row says",
		c.version, build, len(c.members))
}

// PutOp returns the operation of a write load: op(i) PUTs key
// "bench/<prefix>/<i>" with a JSON document of 120 bytes (the size of a
// revocation record) through the v3 JSON gateway of member i%3, and
// returns nil only on HTTP 200 with an answer that has a header.revision.
func (c *etcdCluster) PutOp(t testing.TB, prefix string) op {
	t.Helper()
	return func(ctx context.Context, i int) error {
		m := c.members[i%len(c.members)]
		_, err := c.put(ctx, m, fmt.Sprintf("bench/%s/%d", prefix, i), etcdRecord(i))
		return err
	}
}

// PutLeaderOp is PutOp with every request to the leader (as it is when the
// load starts).
func (c *etcdCluster) PutLeaderOp(t testing.TB, prefix string) op {
	t.Helper()
	lead := c.leader()
	if lead == nil {
		t.Fatal("etcd: no member leads")
	}
	return func(ctx context.Context, i int) error {
		_, err := c.put(ctx, lead, fmt.Sprintf("bench/%s/%d", prefix, i), etcdRecord(i))
		return err
	}
}

// etcdRecordSize is the size of a value of PutOp.
const etcdRecordSize = 120

// etcdRecord is a revocation-like JSON document of etcdRecordSize bytes.
func etcdRecord(i int) []byte {
	rec := fmt.Sprintf(`{"kind":"token","id":"bench-%d","reason":"keyCompromise","time":"%s","pad":"`,
		i, time.Now().UTC().Format(time.RFC3339Nano))
	const tail = `"}`
	if n := etcdRecordSize - len(rec) - len(tail); n > 0 {
		rec += strings.Repeat("x", n)
	}
	return []byte(rec + tail)
}

// etcdHeader is the header of every v3 answer; int64s come as strings.
type etcdHeader struct {
	Revision json.Number `json:"revision"`
}

// put PUTs key=value on m and returns the revision of the answer.
func (c *etcdCluster) put(ctx context.Context, m *etcdMember, key string, value []byte) (int64, error) {
	var ans struct {
		Header *etcdHeader `json:"header"`
	}
	// []byte marshals as base64, as the gateway wants bytes fields.
	req := struct {
		Key   []byte `json:"key"`
		Value []byte `json:"value"`
	}{[]byte(key), value}
	if err := c.call(ctx, m, "/v3/kv/put", req, &ans); err != nil {
		return 0, err
	}
	if ans.Header == nil || ans.Header.Revision == "" {
		return 0, fmt.Errorf("etcd %s: PUT %s: answer has no header.revision", m.name, key)
	}
	rev, err := ans.Header.Revision.Int64()
	if err != nil {
		return 0, fmt.Errorf("etcd %s: PUT %s: header.revision: %w", m.name, key, err)
	}
	return rev, nil
}

// countPrefix counts the keys under prefix on m (a range with
// count_only, linearizable) and returns the count and the store's
// revision.
func (c *etcdCluster) countPrefix(ctx context.Context, m *etcdMember, prefix string) (count, rev int64, err error) {
	end := []byte(prefix)
	end[len(end)-1]++ // the range end of a prefix whose last byte is not 0xff
	req := struct {
		Key       []byte `json:"key"`
		RangeEnd  []byte `json:"range_end"`
		CountOnly bool   `json:"count_only"`
	}{[]byte(prefix), end, true}
	var ans struct {
		Header *etcdHeader `json:"header"`
		Count  json.Number `json:"count"` // absent when 0
	}
	if err := c.call(ctx, m, "/v3/kv/range", req, &ans); err != nil {
		return 0, 0, err
	}
	if ans.Header == nil || ans.Header.Revision == "" {
		return 0, 0, fmt.Errorf("etcd %s: range %s: answer has no header.revision", m.name, prefix)
	}
	if rev, err = ans.Header.Revision.Int64(); err != nil {
		return 0, 0, fmt.Errorf("etcd %s: range %s: header.revision: %w", m.name, prefix, err)
	}
	if ans.Count != "" {
		if count, err = ans.Count.Int64(); err != nil {
			return 0, 0, fmt.Errorf("etcd %s: range %s: count: %w", m.name, prefix, err)
		}
	}
	return count, rev, nil
}

// call POSTs req as JSON to path on m's gateway and decodes a 200 answer
// into ans.
func (c *etcdCluster) call(ctx context.Context, m *etcdMember, path string, req, ans any) error {
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, m.clientURL+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	hr.Header.Set("Content-Type", "application/json")
	resp, err := c.client.Do(hr)
	if err != nil {
		return fmt.Errorf("etcd %s: POST %s: %w", m.name, path, err)
	}
	defer resp.Body.Close()
	// Read it all, so that the connection goes back to the pool.
	out, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("etcd %s: POST %s: read answer: %w", m.name, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("etcd %s: POST %s: %s: %s", m.name, path, resp.Status, etcdPrefix(out))
	}
	if err := json.Unmarshal(out, ans); err != nil {
		return fmt.Errorf("etcd %s: POST %s: answer %s: %w", m.name, path, etcdPrefix(out), err)
	}
	return nil
}

// etcdPrefix is the start of an answer, for an error.
func etcdPrefix(b []byte) string {
	if len(b) > 200 {
		return string(b[:200]) + "..."
	}
	return string(b)
}

// etcdClient is the one HTTP client of the load: HTTP/1.1 keep-alive,
// mutual TLS with the client certificate of the cluster's CA, 10 s
// timeouts.
func etcdClient(t testing.TB, certs etcdCerts) *http.Client {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(certs.clientCert, certs.clientKey)
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(certs.ca)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatalf("%s holds no certificate", certs.ca)
	}
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	tr := &http.Transport{
		DialContext:           (&net.Dialer{Timeout: etcdTimeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:   etcdTimeout,
		ResponseHeaderTimeout: etcdTimeout,
		MaxIdleConns:          0, // no limit over all members
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		Protocols:             &protocols,
	}
	return &http.Client{Transport: tr, Timeout: etcdTimeout}
}

// etcdCerts are the PEM files of the cluster's CA, of each member (server
// and peer, serverAuth and clientAuth) and of the load's client.
type etcdCerts struct {
	ca                    string
	memberCert, memberKey []string
	clientCert, clientKey string
}

// etcdWriteCerts makes a CA (ECDSA P-256), a certificate per member for
// 127.0.0.1 and localhost, and a client certificate, and writes them
// under dir (keys 0600).
func etcdWriteCerts(t testing.TB, dir string, members int) etcdCerts {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          etcdSerial(t),
		Subject:               pkix.Name{CommonName: "keymesh bench etcd CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	certs := etcdCerts{ca: filepath.Join(dir, "ca.crt")}
	etcdWritePEM(t, certs.ca, "CERTIFICATE", caDER, 0o644)

	issue := func(name string, usages []x509.ExtKeyUsage, server bool) (certPath, keyPath string) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: etcdSerial(t),
			Subject:      pkix.Name{CommonName: name},
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.Add(24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  usages,
		}
		if server {
			tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
			tmpl.DNSNames = []string{"localhost"}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		certPath, keyPath = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
		etcdWritePEM(t, certPath, "CERTIFICATE", der, 0o644)
		etcdWritePEM(t, keyPath, "PRIVATE KEY", keyDER, 0o600)
		return certPath, keyPath
	}
	both := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	for k := 1; k <= members; k++ {
		cp, kp := issue(fmt.Sprintf("etcd%d", k), both, true)
		certs.memberCert = append(certs.memberCert, cp)
		certs.memberKey = append(certs.memberKey, kp)
	}
	certs.clientCert, certs.clientKey = issue("bench-client", []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, false)
	return certs
}

// etcdSerial is a random certificate serial number.
func etcdSerial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// etcdWritePEM writes der as one PEM block of type typ with mode perm.
func etcdWritePEM(t testing.TB, path, typ string, der []byte, perm os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), perm); err != nil {
		t.Fatal(err)
	}
}

// TestEtcdPeer starts the etcd cluster, runs 200 PUTs on 8 goroutines and
// checks that each made one revision.
func TestEtcdPeer(t *testing.T) {
	c := startEtcd(t, t.TempDir())
	t.Log(c.Conditions())
	ctx := t.Context()
	const n, workers = 200, 8
	const prefix = "bench/test/"
	_, before, err := c.countPrefix(ctx, c.members[0], prefix)
	if err != nil {
		t.Fatal(err)
	}
	r, err := drive(ctx, n, workers, c.PutOp(t, "test"))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("etcd PUT, %d operations on %d workers: %s", r.N, workers, r)
	count, after, err := c.countPrefix(ctx, c.members[1], prefix)
	if err != nil {
		t.Fatal(err)
	}
	if count != n {
		t.Errorf("%d keys under %s, want %d", count, prefix, n)
	}
	if after-before != n {
		t.Errorf("revision went from %d to %d, want %d more", before, after, n)
	}
}
