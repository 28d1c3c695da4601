package session

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
)

// Metrics counts what the sessions of a Speaker did, for the agent's
// metrics endpoint (the Prometheus text format, written by WritePrometheus:
// the node side carries no metrics library).
type Metrics struct {
	mu       sync.Mutex
	counters map[string]map[string]uint64 // metric name -> label set -> count
}

func newMetrics() *Metrics { return &Metrics{counters: map[string]map[string]uint64{}} }

func (m *Metrics) add(name, labels string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.counters[name]
	if c == nil {
		c = map[string]uint64{}
		m.counters[name] = c
	}
	c[labels]++
}

// Count returns a counter's value (name and label set as in
// WritePrometheus, e.g. `reason="policy"`), for tests and status.
func (m *Metrics) Count(name, labels string) uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.counters[name][labels]
}

const (
	metricNotifications = "keymesh_session_notifications_total"
	metricHandshake     = "keymesh_session_handshake_failures_total"
	metricMessages      = "keymesh_session_messages_total"
)

var metricHelp = map[string]string{
	metricNotifications: "NOTIFICATIONs sent and received, by direction and code/subcode.",
	metricHandshake:     "Connections refused before a session was established, by reason (TLS, identity, token, policy, limits).",
	metricMessages:      "Messages sent and received in sessions, by direction and type.",
}

func (m *Metrics) notification(sent bool, n Notification) {
	dir := "received"
	if sent {
		dir = "sent"
	}
	m.add(metricNotifications, fmt.Sprintf(`direction=%q,code=%q`, dir, n.Name()))
}

func (m *Metrics) handshakeFailed(reason string) {
	m.add(metricHandshake, fmt.Sprintf(`reason=%q`, reason))
}

func (m *Metrics) message(sent bool, t MsgType) {
	d := 0
	if sent {
		d = 1
	}
	m.add(metricMessages, messageLabels[d][t])
}

// messageLabels are the label sets of metricMessages by direction
// (received, sent) and type, made once: a KEEPALIVE costs no formatting.
var messageLabels = func() (l [2][256]string) {
	for t := range 256 {
		for d, dir := range []string{"received", "sent"} {
			l[d][t] = fmt.Sprintf(`direction=%q,type=%q`, dir, MsgType(t))
		}
	}
	return l
}()

// WritePrometheus writes the counters and the sessions by state in the
// Prometheus text exposition format.
func (m *Metrics) WritePrometheus(w io.Writer, states map[State]int) error {
	var b strings.Builder
	b.WriteString("# HELP keymesh_sessions Peering sessions of this node, by state.\n# TYPE keymesh_sessions gauge\n")
	for s := Idle; s <= Established; s++ {
		fmt.Fprintf(&b, "keymesh_sessions{state=%q} %d\n", s, states[s])
	}
	m.mu.Lock()
	names := make([]string, 0, len(metricHelp))
	for n := range metricHelp {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, name := range names {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s counter\n", name, metricHelp[name], name)
		labels := make([]string, 0, len(m.counters[name]))
		for l := range m.counters[name] {
			labels = append(labels, l)
		}
		slices.Sort(labels)
		for _, l := range labels {
			fmt.Fprintf(&b, "%s{%s} %d\n", name, l, m.counters[name][l])
		}
	}
	m.mu.Unlock()
	_, err := io.WriteString(w, b.String())
	return err
}
