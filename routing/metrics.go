package routing

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
)

// metrics counts what the router refused, by reason, and holds the RIB
// sizes, for the agent's metrics endpoint (Prometheus text).
type metrics struct {
	mu      sync.Mutex
	refused map[string]uint64
	updates map[string]uint64 // UPDATE bodies: taken, malformed
	adjIn   int
	best    int
	local   int
	holds   uint64
	warned  uint64 // sessions past their warning threshold
}

// reasonOf is the metrics label of a refusal.
func reasonOf(err error) string {
	for _, r := range []struct {
		err    error
		reason string
	}{{ErrStale, "stale"}, {ErrSignature, "signature"}, {ErrKey, "key"}, {ErrPath, "path"}, {ErrMalformed, "malformed"},
		{ErrInvalidOrigin, "invalid_origin"}, {ErrNotFound, "not_found"}, {ErrPeerLock, "peer_lock"}, {ErrLeak, "leak"},
		{ErrLoop, "loop"}, {ErrOlder, "older"}} {
		if errors.Is(err, r.err) {
			return r.reason
		}
	}
	return "other"
}

func (m *metrics) refuse(err error) {
	m.mu.Lock()
	if m.refused == nil {
		m.refused = map[string]uint64{}
	}
	m.refused[reasonOf(err)]++
	m.mu.Unlock()
}

func (m *metrics) update(ok bool) {
	m.mu.Lock()
	if m.updates == nil {
		m.updates = map[string]uint64{}
	}
	if ok {
		m.updates["taken"]++
	} else {
		m.updates["malformed"]++
	}
	m.mu.Unlock()
}

func (m *metrics) sizes(adjIn, best, local int) {
	m.mu.Lock()
	m.adjIn, m.best, m.local = adjIn, best, local
	m.mu.Unlock()
}

// WritePrometheus writes the router's metrics in the Prometheus text
// format: routes refused by reason, UPDATEs taken and malformed, the
// hold-downs past a maximum number of prefixes, and the RIB sizes.
func (r *Router) WritePrometheus(w io.Writer) error {
	m := &r.metrics
	m.mu.Lock()
	defer m.mu.Unlock()
	var b strings.Builder
	counter := func(name, help, label string, vals map[string]uint64) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s counter\n", name, help, name)
		keys := make([]string, 0, len(vals))
		for k := range vals {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			fmt.Fprintf(&b, "%s{%s=%q} %d\n", name, label, k, vals[k])
		}
	}
	counter("keymesh_routes_refused_total", "Routes from neighbours refused, by reason.", "reason", m.refused)
	counter("keymesh_route_updates_total", "UPDATE bodies from neighbours, by result.", "result", m.updates)
	fmt.Fprintf(&b, "# HELP keymesh_route_hold_downs_total Sessions ended past their maximum number of prefixes.\n# TYPE keymesh_route_hold_downs_total counter\nkeymesh_route_hold_downs_total %d\n", m.holds)
	fmt.Fprintf(&b, "# HELP keymesh_route_max_prefix_warnings_total Sessions that passed the warning threshold of their maximum number of prefixes.\n# TYPE keymesh_route_max_prefix_warnings_total counter\nkeymesh_route_max_prefix_warnings_total %d\n", m.warned)
	fmt.Fprintf(&b, "# HELP keymesh_routes Routes held: in the Adj-RIB-Ins, best in the Loc-RIB, this node's own.\n# TYPE keymesh_routes gauge\n")
	fmt.Fprintf(&b, "keymesh_routes{rib=\"adj_in\"} %d\nkeymesh_routes{rib=\"best\"} %d\nkeymesh_routes{rib=\"local\"} %d\n", m.adjIn, m.best, m.local)
	_, err := io.WriteString(w, b.String())
	return err
}
