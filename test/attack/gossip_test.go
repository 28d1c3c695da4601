package attack

import (
	"crypto"
	"crypto/rand"
	"encoding/json"
	"io"
	"os"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/keymesh/keymesh/ca"
	"github.com/keymesh/keymesh/cluster/agent"
	"github.com/keymesh/keymesh/cluster/api"
	"github.com/keymesh/keymesh/fsm"
	"github.com/keymesh/keymesh/identity"
	"github.com/keymesh/keymesh/session/gossip"
	"github.com/keymesh/keymesh/test/harness"
)

// leakedKeys is the gossip keyring an attacker reads from a node's disk.
func leakedKeys(t *testing.T, dir string) [][]byte {
	t.Helper()
	b, err := os.ReadFile(agent.GossipKeysPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	var kr api.GossipKeyring
	if err := json.Unmarshal(b, &kr); err != nil {
		t.Fatal(err)
	}
	var keys [][]byte
	for _, k := range kr.Keys {
		keys = append(keys, k.Key)
	}
	return keys
}

// metaDelegate is a memberlist delegate whose meta an attacker sets.
type metaDelegate struct{ meta *[]byte }

func (d metaDelegate) NodeMeta(int) []byte                 { return *d.meta }
func (d metaDelegate) NotifyMsg([]byte)                    {}
func (d metaDelegate) GetBroadcasts(int, int) [][]byte     { return nil }
func (d metaDelegate) LocalState(bool) []byte              { return nil }
func (d metaDelegate) MergeRemoteState(buf []byte, _ bool) {}

// rogue is an attacker's memberlist member on loopback: its own label and
// keys, and the meta meta(addr) makes once its address is known.
func rogue(t *testing.T, name, label string, keys [][]byte, meta func(addr string) []byte) *memberlist.Memberlist {
	t.Helper()
	var m []byte
	cfg := memberlist.DefaultLANConfig()
	cfg.Name, cfg.Label = name, label
	cfg.BindAddr, cfg.BindPort, cfg.AdvertiseAddr = "127.0.0.1", 0, "127.0.0.1"
	cfg.LogOutput = io.Discard
	cfg.Delegate = metaDelegate{&m}
	kr, err := memberlist.NewKeyring(keys, keys[0])
	if err != nil {
		t.Fatal(err)
	}
	cfg.Keyring, cfg.GossipVerifyIncoming, cfg.GossipVerifyOutgoing = kr, true, true
	ml, err := memberlist.Create(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ml.Shutdown() })
	if meta != nil {
		m = meta(ml.LocalNode().Address())
		if err := ml.UpdateNode(time.Second); err != nil {
			t.Fatal(err)
		}
	}
	return ml
}

// proofOf is a membership proof of node signed by key (a key the target
// may or may not know).
func proofOf(t *testing.T, node, network string, key crypto.Signer) func(string) []byte {
	return func(addr string) []byte {
		kid, err := identity.Thumbprint(key.Public())
		if err != nil {
			t.Fatal(err)
		}
		p, err := gossip.NewProof(gossip.Signer{Node: node, KID: kid, Key: key}, network, addr, "", time.Now())
		if err != nil {
			t.Fatal(err)
		}
		b, err := p.Encode()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
}

// TestGossipAttacks: what an attacker may try on an agent's gossip, with
// network access, a node's gossip key or a node's key. Each is refused:
// nothing enters the target's node graph, no bulletin changes its trust
// state, every drop is counted in its metrics (silently: no answer), and
// the honest member stays.
func TestGossipAttacks(t *testing.T) {
	c := harness.StartCluster(t, bin, 3)
	ctx := ctxT(t, 5*time.Minute)
	agents := c.StartGossip("ga", 2, func(int) []string { return []string{"--log-level", "warn"} })
	target, honest := agents[0], agents[1]
	c.WaitMember(target, honest.Name, time.Minute, gossip.StateAlive)
	res, err := target.Members(ctx)
	if err != nil {
		t.Fatal(err)
	}
	addr := memberlist.Address{Addr: res.Gossip, Name: target.Name}
	defer func() {
		if t.Failed() {
			t.Logf("the target's log:\n%s", target.Log())
		}
	}()
	events := func(e string) int { return agentMetric(t, target, `keymesh_gossip_events_total{event="`+e+`"}`) }
	// after waits until event e counts more than before.
	after := func(t *testing.T, e string, before int) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for events(e) <= before {
			if time.Now().After(deadline) {
				t.Fatalf("the target did not count %q (still %d)", e, before)
			}
			time.Sleep(20 * time.Millisecond) // polling a process
		}
	}
	// absent checks that the target's graph has no member name, and the
	// honest member alive.
	absent := func(t *testing.T, name string) {
		t.Helper()
		res, err := target.Members(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range res.Members {
			if m.Node == name {
				t.Fatalf("%s entered the target's graph: %+v", name, m)
			}
			if m.Node == honest.Name && m.State != gossip.StateAlive {
				t.Fatalf("the honest member is %s", m.State)
			}
		}
	}
	leak := leakedKeys(t, honest.Dir)
	stranger, err := ca.GenerateKey(ca.KeyP256, nil)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("a node of another network, under its own label", func(t *testing.T) {
		ml := rogue(t, "b-node", "b.example.net", leak, proofOf(t, "b-node", "b.example.net", stranger))
		if n, err := ml.Join([]string{addr.Addr}); err == nil && n > 0 {
			t.Fatalf("joined %d", n)
		}
		absent(t, "b-node")
	})
	refusedMember := func(t *testing.T, name string, meta func(string) []byte) {
		t.Helper()
		before := events("member_refused")
		ml := rogue(t, name, c.Network, leak, meta)
		ml.Join([]string{addr.Addr}) // memberlist may count a join its peer refuses in the delegate as done
		after(t, "member_refused", before)
		absent(t, name)
	}
	t.Run("a node of another network, under this network's label", func(t *testing.T) {
		refusedMember(t, "b-node2", proofOf(t, "b-node2", "b.example.net", stranger))
	})
	t.Run("the leaked gossip key without a membership", func(t *testing.T) {
		refusedMember(t, "mallory", proofOf(t, "mallory", c.Network, stranger))
	})
	t.Run("the name of an honest member, the leaked key, a proof of another key", func(t *testing.T) {
		before := events("member_refused")
		ml := rogue(t, honest.Name, c.Network, leak, proofOf(t, honest.Name, c.Network, stranger))
		ml.Join([]string{addr.Addr})
		after(t, "member_refused", before)
		absent(t, "nobody")
	})
	t.Run("malformed meta", func(t *testing.T) {
		junk := make([]byte, 200)
		rand.Read(junk)
		refusedMember(t, "junk", func(string) []byte { return junk })
	})

	// Bulletins, sent straight to the target as user messages by a sender
	// holding the leaked key. Each would revoke the honest node.
	sender := rogue(t, "sender", c.Network, leak, nil)
	send := func(t *testing.T, relayer string, bulletin []byte) {
		t.Helper()
		msg, err := gossip.RelayMessage(relayer, bulletin)
		if err != nil {
			t.Fatal(err)
		}
		if err := sender.SendToAddress(addr, msg); err != nil {
			t.Fatal(err)
		}
	}
	hn := loadNode(t, honest.Name, honest.Dir)
	realIssuer := hn.chain[1] // public: in every node's chain
	fakeRoot, err := ca.NewRoot(c.Network, time.Now().Add(-time.Hour), nil)
	if err != nil {
		t.Fatal(err)
	}
	fakeKey, _ := ca.GenerateKey(ca.KeyP256, nil)
	fakeIssuer, err := ca.SignIntermediate(fakeRoot, fakeKey.Public(), c.Network, "r1", time.Now().Add(-time.Hour), nil)
	if err != nil {
		t.Fatal(err)
	}
	bulletin := func(edit func(*gossip.Bulletin)) gossip.Bulletin {
		b := gossip.Bulletin{Network: c.Network, From: 1 << 30, To: 1<<30 + 1, Time: time.Now().Unix(),
			Revocations: []gossip.Revocation{{Kind: string(fsm.RevocationNode), ID: honest.Name, Time: time.Now().Unix()}}}
		if edit != nil {
			edit(&b)
		}
		return b
	}
	encode := func(t *testing.T, b gossip.Bulletin) []byte {
		t.Helper()
		enc, err := b.Encode()
		if err != nil {
			t.Fatal(err)
		}
		return enc
	}
	signed := func(t *testing.T, b gossip.Bulletin, cert *ca.Signer) []byte {
		t.Helper()
		if err := gossip.SignBulletin(&b, cert.Cert, cert.Key); err != nil {
			t.Fatal(err)
		}
		return encode(t, b)
	}
	dropped := func(t *testing.T, reason string, msg []byte) {
		t.Helper()
		before := events(reason)
		send(t, "mallory", msg)
		after(t, reason, before)
		absent(t, "nobody")
	}
	t.Run("an unsigned bulletin", func(t *testing.T) {
		b := bulletin(nil)
		b.Issuer = realIssuer.Raw
		dropped(t, "unsigned", encode(t, b))
	})
	t.Run("a bulletin under the issuer's certificate, signed by another key", func(t *testing.T) {
		dropped(t, "signature", signed(t, bulletin(nil), &ca.Signer{Cert: realIssuer, Key: stranger}))
	})
	t.Run("a bulletin of a forged issuer", func(t *testing.T) {
		dropped(t, "issuer", signed(t, bulletin(nil), &ca.Signer{Cert: fakeIssuer, Key: fakeKey}))
	})
	t.Run("a bulletin of another network", func(t *testing.T) {
		dropped(t, "other_network", signed(t, bulletin(func(b *gossip.Bulletin) { b.Network = "b.example.net" }), &ca.Signer{Cert: fakeIssuer, Key: fakeKey}))
	})
	t.Run("a stale bulletin", func(t *testing.T) {
		old := time.Now().Add(-time.Hour).Unix()
		dropped(t, "stale", signed(t, bulletin(func(b *gossip.Bulletin) { b.Time = old }), &ca.Signer{Cert: fakeIssuer, Key: fakeKey}))
	})
	t.Run("a malformed message", func(t *testing.T) {
		before := events("malformed")
		if err := sender.SendToAddress(addr, []byte("B\xa1\x01\x63abc\x02\x44junk")); err != nil {
			t.Fatal(err)
		}
		after(t, "malformed", before)
	})
	t.Run("a root's bulletin replayed", func(t *testing.T) {
		// A real bulletin, as any node gets it in its trust answer: of a
		// token's revocation, which the target applies by its trust sync.
		cl := hn.client(t, c, c.Roots[0], "")
		st, err := cl.Trust(ctx, 0, 0, true)
		if err != nil {
			t.Fatal(err)
		}
		rev, err := c.Client(c.Leader(10*time.Second)).Revoke(ctx, api.RevokeRequest{Kind: "token", ID: "jti-stolen-1", Reason: "test"})
		if err != nil {
			t.Fatal(err)
		}
		d, err := cl.Trust(ctx, st.Index, 10*time.Second, false)
		if err != nil || len(d.Bulletins) == 0 {
			t.Fatalf("no bulletin in the trust answer: %v %+v", err, d)
		}
		deadline := time.Now().Add(15 * time.Second)
		for agentMetric(t, target, "keymesh_agent_trust_index") < int(rev.Index) {
			if time.Now().After(deadline) {
				t.Fatal("the target did not sync the revocation")
			}
			time.Sleep(20 * time.Millisecond) // polling a process
		}
		before := events("replayed") + events("duplicate")
		send(t, "mallory", d.Bulletins[0])
		deadline = time.Now().Add(15 * time.Second)
		for events("replayed")+events("duplicate") <= before {
			if time.Now().After(deadline) {
				t.Fatal("the replayed bulletin was not dropped as applied")
			}
			time.Sleep(20 * time.Millisecond) // polling a process
		}
	})
	t.Run("a member flooding bulletins", func(t *testing.T) {
		limited, verified := events("rate_limited"), events("issuer")
		for i := range 60 {
			send(t, "flooder", signed(t, bulletin(func(b *gossip.Bulletin) { b.To += uint64(i) }), &ca.Signer{Cert: fakeIssuer, Key: fakeKey}))
		}
		deadline := time.Now().Add(15 * time.Second)
		for events("rate_limited")+events("issuer")-limited-verified < 60 {
			if time.Now().After(deadline) {
				t.Fatalf("of 60 bulletins, %d rate limited and %d verified", events("rate_limited")-limited, events("issuer")-verified)
			}
			time.Sleep(20 * time.Millisecond) // polling a process
		}
		if n := events("issuer") - verified; n > 12 {
			t.Fatalf("%d of a flood of 60 bulletins were verified (burst 10, 2/s)", n)
		}
		absent(t, "nobody")
	})

	// A revoked node: refused with its own key at once; after the
	// rotation its revocation starts, its gossip key reads nothing.
	t.Run("a revoked node rejoining", func(t *testing.T) {
		r := join(t, c, "ga-revoked", "NODE")
		old := leakedKeys(t, r.dir)
		cl := c.Client(c.Leader(10 * time.Second))
		kr0, err := cl.GossipKeyring(ctx)
		if err != nil {
			t.Fatal(err)
		}
		rev, err := cl.Revoke(ctx, api.RevokeRequest{Kind: "node", ID: r.id, Reason: "stolen"})
		if err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(15 * time.Second)
		for agentMetric(t, target, "keymesh_agent_trust_index") < int(rev.Index) {
			if time.Now().After(deadline) {
				t.Fatal("the target did not sync the revocation")
			}
			time.Sleep(20 * time.Millisecond) // polling a process
		}
		before := events("member_refused")
		ml := rogue(t, r.id, c.Network, old, proofOf(t, r.id, c.Network, r.key))
		ml.Join([]string{addr.Addr})
		after(t, "member_refused", before)
		absent(t, r.id)
		// The rotation: the old key goes; the target takes the new one.
		deadline = time.Now().Add(30 * time.Second)
		for {
			kr, err := cl.GossipKeyring(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(kr.Keys) == 1 && kr.Keys[0].ID != kr0.Keys[0].ID && agentMetric(t, target, "keymesh_gossip_keyring_index") >= int(kr.Index) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the rotation did not finish: %+v", kr)
			}
			time.Sleep(50 * time.Millisecond) // the roots have no event for it
		}
		late := rogue(t, r.id+"-late", c.Network, old, proofOf(t, r.id+"-late", c.Network, r.key))
		if n, err := late.Join([]string{addr.Addr}); err == nil && n > 0 {
			t.Fatalf("the old gossip key still joins (%d)", n)
		}
		absent(t, r.id+"-late")
		c.WaitMember(target, honest.Name, 30*time.Second, gossip.StateAlive)
	})
}
