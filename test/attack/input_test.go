package attack

import (
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/keymesh/keymesh/test/harness"
)

// TestStrictInput: request bodies are decoded strictly at every root —
// a duplicated member (the second would win in a lax decoder), a member
// name in another case, an unknown member — and node ids are lower case,
// so one node cannot hide under two spellings. Each refusal changes
// nothing.
func TestStrictInput(t *testing.T) {
	c := harness.StartCluster(t, bin, 1)
	ctx := ctxT(t, time.Minute)
	before := converged(t, c)
	r := c.Roots[0]
	for _, tc := range []struct {
		name string
		body map[string]any
		raw  string
	}{
		{name: "duplicate member", raw: `{"node_id":"dup-a","node_id":"dup-b","csr":"MIIB"}`},
		{name: "member in another case", raw: `{"Node_ID":"case-a","csr":"MIIB"}`},
		{name: "unknown member", raw: `{"node_id":"unk-a","csr":"MIIB","subject":"CN=admin"}`},
		{name: "upper-case node id", body: map[string]any{"node_id": "Edge-1", "csr": csrFor(t, c.Network, "edge-1")}},
	} {
		var status int
		var code string
		if tc.raw != "" {
			status, code = postRaw(t, c, r, "/v1/registrations", tc.raw)
		} else {
			status, code = postFrom(t, ctx, c, "127.0.0.1", r, "/v1/registrations", tc.body)
		}
		if status != http.StatusBadRequest || code != "bad_request" {
			t.Errorf("%s: %d %s, want 400 bad_request", tc.name, status, code)
		}
	}
	if after := converged(t, c); after != before {
		t.Fatal("refused requests changed the replicated state")
	}
	// A kid that begins with '-' is an argument of the CLI, not a flag.
	kid := "-" + strings.Repeat("A", 42)
	cmd := exec.CommandContext(ctx, c.Bin, "revoke", "key", kid, "--reason", "test", "--data-dir", r.Dir)
	cmd.Env = append(os.Environ(), "KEYMESH_SERVER=", "KEYMESH_CA_FILE=", "KEYMESH_CREDENTIAL=")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("keymesh revoke key %s: %v\n%s", kid, err, out)
	}
	if _, found, err := c.Client(r).Revocation(ctx, "key", kid, true); err != nil || !found {
		t.Fatalf("the revocation of %s: found=%v %v", kid, found, err)
	}
	out, err := exec.CommandContext(ctx, c.Bin, "tokens", "create", "--node-id", "Edge-1", "--data-dir", r.Dir).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "lower-case") {
		t.Fatalf("a token for an upper-case node id: %v\n%s", err, out)
	}
}

// postRaw POSTs a raw body to r and returns the status and error code.
func postRaw(t *testing.T, c *harness.Cluster, r *harness.Root, path, body string) (int, string) {
	t.Helper()
	return postFrom(t, ctxT(t, 10*time.Second), c, "127.0.0.1", r, path, rawJSON(body))
}

// rawJSON marshals as itself.
type rawJSON string

func (r rawJSON) MarshalJSON() ([]byte, error) { return []byte(r), nil }
