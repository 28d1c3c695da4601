package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"testing"
	"time"

	"github.com/keymesh/keymesh/fsm"
	"github.com/keymesh/keymesh/identity/trust"
)

const journalNet = "agent.example"

func journalBase(index uint64) trust.Delta {
	return trust.Delta{Network: journalNet, Index: index, Reset: true,
		Put: trust.Records{Servers: []fsm.Server{{Name: "r1", APIAddr: "a:1", Status: fsm.ServerVoter}}}}
}

// revDelta revokes token id, bringing a state from since to since+1.
func revDelta(since uint64, id string) trust.Delta {
	return trust.Delta{Network: journalNet, Since: since, Index: since + 1,
		Put: trust.Records{Revocations: []fsm.Revocation{{Kind: fsm.RevocationToken, ID: id, Time: time.Unix(1_900_000_000, 0).UTC()}}}}
}

// TestTrustJournal: a change costs a journal line, not a snapshot; the
// state read back is the snapshot with the journal replayed; a journal
// that outgrows the snapshot, or a full document, makes a new snapshot
// and an empty journal.
func TestTrustJournal(t *testing.T) {
	dir := t.TempDir()
	base, err := trust.NewState(journalBase(5))
	if err != nil {
		t.Fatal(err)
	}
	s := newTrustStore(dir, 0, true)
	cur := base
	get := func() *trust.State { return cur }
	if err := s.write(get, nil, true); err != nil {
		t.Fatal(err)
	}
	snap, _ := os.Stat(TrustPath(dir))
	var deltas []trust.Delta
	for i := uint64(5); i < 8; i++ {
		d := revDelta(i, fmt.Sprintf("jti-%d", i))
		if cur, err = cur.Apply(d); err != nil {
			t.Fatal(err)
		}
		deltas = append(deltas, d)
	}
	if err := s.write(get, deltas[:1], false); err != nil {
		t.Fatal(err)
	}
	if err := s.write(get, deltas[1:], false); err != nil {
		t.Fatal(err)
	}
	if after, _ := os.Stat(TrustPath(dir)); !after.ModTime().Equal(snap.ModTime()) || after.Size() != snap.Size() {
		t.Fatal("a change rewrote the snapshot")
	}
	j, err := os.ReadFile(JournalPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	line, _ := journalLine(deltas[0])
	if len(j) != 3*len(line) {
		t.Fatalf("journal of %d bytes, want three lines of %d", len(j), len(line))
	}
	doc, err := ReadTrustFile(dir, journalNet)
	if err != nil || doc.Index != 8 || len(doc.Put.Revocations) != 3 {
		t.Fatalf("read back index %d with %d revocations (%v), want 8 with 3", doc.Index, len(doc.Put.Revocations), err)
	}
	// Deltas at or below what is written already are skipped.
	if err := s.write(get, deltas, false); err != nil {
		t.Fatal(err)
	}
	if j2, _ := os.ReadFile(JournalPath(dir)); len(j2) != len(j) {
		t.Fatal("deltas written twice")
	}
	// Past max(minCompact, snapshot size) the next write is a snapshot.
	for s.size <= minCompact {
		var batch []trust.Delta // a burst of changes, one write
		for range 1000 {
			d := revDelta(cur.Index(), fmt.Sprintf("jti-%d", cur.Index()))
			if cur, err = cur.Apply(d); err != nil {
				t.Fatal(err)
			}
			batch = append(batch, d)
		}
		if err := s.write(get, batch, false); err != nil {
			t.Fatal(err)
		}
	}
	d := revDelta(cur.Index(), "last")
	if cur, err = cur.Apply(d); err != nil {
		t.Fatal(err)
	}
	if err := s.write(get, []trust.Delta{d}, false); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(JournalPath(dir)); !errors.Is(err, fs.ErrNotExist) || s.size != 0 {
		t.Fatalf("the journal was not compacted: %v, %d bytes", err, s.size)
	}
	doc, err = ReadTrustFile(dir, journalNet)
	if err != nil || doc.Index != cur.Index() {
		t.Fatalf("after compaction: index %d (%v), want %d", doc.Index, err, cur.Index())
	}
}

// TestTrustJournalDamage: a journal is read up to its first torn,
// damaged, foreign or gapped line; what follows is dropped, and the
// follower's first write starts the journal over from a snapshot.
func TestTrustJournalDamage(t *testing.T) {
	good, _ := journalLine(revDelta(5, "a"))
	second, _ := journalLine(revDelta(6, "b"))
	gap, _ := journalLine(revDelta(9, "gap"))
	foreign := revDelta(6, "f")
	foreign.Network = "other.example"
	other, _ := journalLine(foreign)
	flipped := append([]byte(nil), second...)
	flipped[20] ^= 1
	full, _ := journalLine(journalBase(7))
	for _, c := range []struct {
		name    string
		journal []byte
		index   uint64
	}{
		{"intact", append(append([]byte(nil), good...), second...), 7},
		{"torn last line", append(append([]byte(nil), good...), second[:len(second)-5]...), 6},
		{"bit flip", append(append([]byte(nil), good...), flipped...), 6},
		{"no checksum", append(append([]byte(nil), good...), second[9:]...), 6},
		{"other network", append(append([]byte(nil), good...), other...), 6},
		{"gap", append(append([]byte(nil), good...), gap...), 6},
		{"full document", append(append([]byte(nil), good...), full...), 6},
		{"garbage", []byte("\x00\x01garbage\n"), 5},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := WriteTrustFile(dir, journalBase(5)); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(JournalPath(dir), c.journal, 0o644); err != nil {
				t.Fatal(err)
			}
			st, _, jerr, err := loadTrust(dir, journalNet)
			if err != nil || st.Index() != c.index {
				t.Fatalf("loaded index %d (%v), want %d", st.Index(), err, c.index)
			}
			if (jerr == nil) != (c.name == "intact") || jerr != nil && !errors.Is(jerr, ErrTrustFile) {
				t.Fatalf("journal error %v", jerr)
			}
			f, err := NewFollower(FollowerConfig{DataDir: dir, Network: journalNet, Dial: func(string) (TrustSource, error) { return nil, errors.New("offline") }})
			if err != nil {
				t.Fatal(err)
			}
			if f.Index() != c.index {
				t.Fatalf("follower at %d, want %d", f.Index(), c.index)
			}
			if f.store.mustSnap != (jerr != nil) {
				t.Fatalf("snapshot due %v after journal error %v", f.store.mustSnap, jerr)
			}
			if err := f.store.write(f.cur.Load, []trust.Delta{revDelta(c.index, "next")}, false); err != nil {
				t.Fatal(err)
			}
			if jerr != nil {
				if _, err := os.Stat(JournalPath(dir)); !errors.Is(err, fs.ErrNotExist) {
					t.Fatal("a damaged journal was appended to")
				}
			}
		})
	}
}

// FuzzTrustJournal: whatever the journal holds, replaying it over a state
// gives a state (never a panic), and an early stop is ErrTrustFile.
func FuzzTrustJournal(f *testing.F) {
	a, _ := journalLine(revDelta(5, "a"))
	b, _ := journalLine(revDelta(6, "b"))
	f.Add(append(append([]byte(nil), a...), b...))
	f.Add(a[:len(a)-3])
	f.Add([]byte("00000000 {}\n"))
	f.Add([]byte("\n\n"))
	base, err := trust.NewState(journalBase(5))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, j []byte) {
		st, n, err := replayJournal(j, base)
		if st == nil || st.Index() < base.Index() {
			t.Fatalf("replay gave %v", st)
		}
		if err != nil && !errors.Is(err, ErrTrustFile) {
			t.Fatalf("error not ErrTrustFile: %v", err)
		}
		if n == 0 && st != base {
			t.Fatal("a state changed without a line applied")
		}
	})
}
