package cluster

import (
	"context"
	"crypto/tls"
	"net/http"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/keymesh/keymesh/fsm"
)

// scrape reads srv's metrics as cert and returns the families by name.
func scrape(t *testing.T, srv *Server, cert *tls.Certificate) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := apiClient(t, srv, cert).Get("https://" + srv.APIAddr() + "/v1/sys/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v1/sys/metrics: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("the metrics do not parse as the Prometheus text format: %v", err)
	}
	return fams
}

// value is the value of the sample of family name whose labels include
// labels (name=value pairs); ok is false when there is none.
func value(fams map[string]*dto.MetricFamily, name string, labels ...string) (float64, bool) {
	f, ok := fams[name]
	if !ok {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, lp := range m.GetLabel() {
				if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		}
	}
	return 0, false
}

// TestMetrics: GET /v1/sys/metrics serves Raft, the replicated state, the
// API and the writes in the Prometheus text format, to those Cedar lets
// read the cluster.
func TestMetrics(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	tc := newTestCluster(t, 2)
	leader, f := tc.leader(), follower(tc)
	admin := adminCert(t, f)

	// A write through the follower (forwarded), one the state machine
	// refuses, and an admin read; counters are compared with a scrape
	// taken before.
	before := scrape(t, f, admin)
	if _, err := revoke(ctx, f, "metrics-jti"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Propose(ctx, fsm.MsgJoinTokenRevoke, fsm.JoinTokenRevoke{ID: "no-such-token"}); err == nil {
		t.Fatal("revoking an unknown join token was accepted")
	}
	resp, err := apiClient(t, f, admin).Get("https://" + f.APIAddr() + "/v1/cluster/status")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	fams := scrape(t, f, admin)
	for _, want := range []struct {
		name   string
		labels []string
		min    float64
		max    float64
	}{
		{"keymesh_raft_state", []string{"state", "Follower"}, 1, 1},
		{"keymesh_raft_state", []string{"state", "Leader"}, 0, 0},
		{"keymesh_raft_voters", nil, 2, 2},
		{"keymesh_raft_applied_index", nil, 1, 1e9},
		{"keymesh_raft_commit_index", nil, 1, 1e9},
		{"keymesh_raft_last_contact_seconds", nil, 0, 5},
		{"keymesh_proposals_total", []string{"result", "ok"}, 1, 1},
		{"keymesh_proposals_total", []string{"result", "rejected"}, 1, 1},
		{"keymesh_fsm_commands_total", []string{"type", "revoke", "result", "ok"}, 1, 1},
		{"keymesh_fsm_commands_total", []string{"type", "join_token_revoke", "result", "rejected"}, 1, 1},
		{"keymesh_state_records", []string{"table", "revocations"}, 1, 1},
		{"keymesh_state_records", []string{"table", "servers"}, 2, 2},
		{"keymesh_api_requests_total", []string{"route", "GET /v1/cluster/status", "code", "200"}, 1, 1},
		{"keymesh_api_request_duration_seconds", []string{"route", "GET /v1/cluster/status"}, 1, 1},
		{"go_goroutines", nil, 1, 1e6},
	} {
		got, ok := value(fams, want.name, want.labels...)
		if fams[want.name].GetType() == dto.MetricType_COUNTER {
			was, _ := value(before, want.name, want.labels...)
			got -= was
		}
		if !ok || got < want.min || got > want.max {
			t.Errorf("%s%v = %v (present %v), want %v..%v", want.name, want.labels, got, ok, want.min, want.max)
		}
	}

	fams = scrape(t, leader, adminCert(t, leader))
	if v, _ := value(fams, "keymesh_raft_state", "state", "Leader"); v != 1 {
		t.Errorf("the leader reports keymesh_raft_state{state=Leader} %v", v)
	}
	if v, _ := value(fams, "keymesh_raft_leadership_gained_total"); v < 1 {
		t.Errorf("the leader reports keymesh_raft_leadership_gained_total %v", v)
	}
	// The follower's write arrived over the internal apply call.
	if v, _ := value(fams, "keymesh_api_requests_total", "route", "POST /v1/internal/apply", "code", "200"); v < 1 {
		t.Errorf("the leader counted %v internal applies", v)
	}

	// Without a credential: 401; as a node: Cedar refuses.
	for _, c := range []struct {
		cert *tls.Certificate
		want int
	}{{nil, http.StatusUnauthorized}, {nodeCert(t, f), http.StatusForbidden}} {
		resp, err := apiClient(t, f, c.cert).Get("https://" + f.APIAddr() + "/v1/sys/metrics")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("metrics with cert %v: %s, want %d", c.cert != nil, resp.Status, c.want)
		}
	}
}
