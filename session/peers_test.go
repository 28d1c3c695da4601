package session

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keymesh/keymesh/ca"
)

func TestParsePeers(t *testing.T) {
	dir := t.TempDir()
	must(t, os.WriteFile(filepath.Join(dir, "core-2.key"), []byte(strings.Repeat("ab", 32)+"\n"), 0o600))
	file := filepath.Join(dir, "peers")
	must(t, os.WriteFile(file, []byte(`# whom edge-1 dials
core-1@10.0.0.11:1790,role=provider
core-2@[2001:db8::12]:1790,role=provider,psk=core-2.key   # a key beside this file

edge-2@edge-2.mainnet.example.net:1790,max-prefix=50,hold-down=1m,notfound=reject,lock=10.1.0.0/16+2001:db8::/32
audit-1,role=customer
`), 0o644))
	fh, err := os.Open(file)
	must(t, err)
	defer fh.Close()
	peers, err := ParsePeersFile(fh, file)
	must(t, err)
	if len(peers) != 4 {
		t.Fatalf("%d peers: %+v", len(peers), peers)
	}
	if p := peers[0]; p.ID != "core-1" || p.Addr != "10.0.0.11:1790" || p.Role != RoleProvider || p.PSK != nil {
		t.Errorf("line 2: %+v", p)
	}
	if p := peers[1]; p.Addr != "[2001:db8::12]:1790" || p.PSK == nil {
		t.Errorf("line 3: %+v", p)
	}
	if p := peers[2]; p.Role != RoleInternal || p.Addr != "edge-2.mainnet.example.net:1790" || p.MaxPrefix != 50 ||
		p.HoldDown != time.Minute || !p.RejectNotFound || len(p.Locks) != 2 || p.Locks[1].String() != "2001:db8::/32" {
		t.Errorf("line 5: %+v", p)
	}
	if p := peers[3]; p.Addr != "" || p.Role != RoleCustomer {
		t.Errorf("line 6: %+v", p)
	}
	for _, c := range []struct{ in, line string }{
		{"core-1@10.0.0.1", ":1:"},
		{"\n\nCore_1@10.0.0.1:1", ":3:"},
		{"a@h:0", ":1:"},
		{"a@h:99999", ":1:"},
		{"a@:179", ":1:"},
		{"a@h:1,role=boss", ":1:"},
		{"a@h:1,role", ":1:"},
		{"a@h:1,colour=blue", ":1:"},
		{"a@h:1,role=peer,role=peer", ":1:"},
		{"a@h:1,psk=missing.key", ":1:"},
		{"a@h:1\nb@h:2\na@h:3", ":3:"},
		{"a@h:1 b@h:2", ":1:"},
		{"a@h:1,max-prefix=0", ":1:"},
		{"a@h:1,max-prefix=lots", ":1:"},
		{"a@h:1,hold-down=1ms", ":1:"},
		{"a@h:1,notfound=maybe", ":1:"},
		{"a@h:1,lock=10.1.0.1/16", ":1:"},
		{"a@h:1,lock=10.1.0.0/16+", ":1:"},
	} {
		_, err := ParsePeersFile(strings.NewReader(c.in), "peers.txt")
		if !errors.Is(err, ErrPeerSpec) || !strings.Contains(err.Error(), "peers.txt"+c.line) {
			t.Errorf("%q: %v, want ErrPeerSpec at peers.txt%s", c.in, err, c.line)
		}
	}
}

// FuzzPeers: a peers file parses into valid peers or an error naming its
// line; no panic.
func FuzzPeers(f *testing.F) {
	for _, s := range []string{"core-1@10.0.0.11:1790,role=provider\n", "a,role=customer", "# c\n\nb@[::1]:1\n", "a@h:1,psk=x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		peers, err := ParsePeersFile(strings.NewReader(s), "p")
		if err != nil {
			if !strings.HasPrefix(err.Error(), "p:") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		for _, p := range peers {
			if p.ID == "" || !p.Role.valid() {
				t.Fatalf("accepted %+v", p)
			}
		}
	})
}

// TestPeerIDsAcrossNetworks: a configured node id names a node of this
// network only; a federated network's node is configured, and matched, by
// its SPIFFE ID, so that its node of the same id never passes for ours.
func TestPeerIDsAcrossNetworks(t *testing.T) {
	ours := ca.Identity{Network: "mesh.example.net", Kind: ca.KindNode, Name: "edge-1"}
	theirs := ca.Identity{Network: "partner.example.net", Kind: ca.KindNode, Name: "edge-1"}
	for _, tc := range []struct {
		want string
		id   ca.Identity
		ok   bool
	}{
		{"edge-1", ours, true},
		{"edge-1", theirs, false},
		{"spiffe://partner.example.net/node/edge-1", theirs, true},
		{"spiffe://partner.example.net/node/edge-1", ours, false},
		{"spiffe://mesh.example.net/node/edge-1", ours, true},
	} {
		if got := namesPeer(tc.want, tc.id, "mesh.example.net"); got != tc.ok {
			t.Errorf("peer %s, certificate of %s: %v, want %v", tc.want, tc.id.URI(), got, tc.ok)
		}
	}
	for _, id := range []string{"edge-1", "spiffe://partner.example.net/node/edge-1"} {
		if err := ValidatePeerID(id); err != nil {
			t.Errorf("%s refused: %v", id, err)
		}
	}
	for _, id := range []string{"spiffe://partner.example.net/root/r1", "spiffe://partner.example.net", "Edge_1", ""} {
		if err := ValidatePeerID(id); err == nil {
			t.Errorf("%q accepted as a peer id", id)
		}
	}
}
