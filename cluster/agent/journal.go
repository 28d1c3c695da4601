package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"

	"github.com/keymesh/keymesh/cluster/api"
	"github.com/keymesh/keymesh/identity/trust"
)

// The follower persists the trust state as a snapshot and a journal:
// trust.json holds a full document; trust.journal the deltas applied
// since, one line each ("<crc32 of the JSON, 8 hex digits> <trust.Delta
// as JSON>"), appended and synced. A change costs the agent's disk the
// size of the change, not of the state; when the journal outgrows the
// snapshot (or a full document was fetched), a new snapshot is written and
// the journal starts over. Reading takes the snapshot and replays the
// journal up to its first line that is torn, damaged or does not apply.
const fileJournal = "trust.journal"

// JournalPath is where the follower of the node in dir journals the
// deltas applied since trust.json.
func JournalPath(dir string) string { return filepath.Join(dir, fileJournal) }

// minCompact is the journal size under which it is never compacted.
const minCompact = 1 << 20

// journalLine encodes one delta as a journal line.
func journalLine(d trust.Delta) ([]byte, error) {
	b, err := json.Marshal(d)
	if err != nil {
		return nil, err
	}
	line := make([]byte, 0, len(b)+10)
	line = fmt.Appendf(line, "%08x ", crc32.ChecksumIEEE(b))
	line = append(line, b...)
	return append(line, '\n'), nil
}

// decodeJournalLine decodes one journal line (without its newline).
func decodeJournalLine(line []byte) (trust.Delta, error) {
	sum, body, ok := bytes.Cut(line, []byte{' '})
	if !ok || len(sum) != 8 {
		return trust.Delta{}, fmt.Errorf("%w: a journal line without its checksum", ErrTrustFile)
	}
	want, err := strconv.ParseUint(string(sum), 16, 32)
	if err != nil || uint32(want) != crc32.ChecksumIEEE(body) {
		return trust.Delta{}, fmt.Errorf("%w: a journal line fails its checksum", ErrTrustFile)
	}
	var d trust.Delta
	if err := api.DecodeStrict(body, &d); err != nil {
		return trust.Delta{}, fmt.Errorf("%w: journal line: %w", ErrTrustFile, err)
	}
	if d.Reset {
		return trust.Delta{}, fmt.Errorf("%w: a full document in the journal", ErrTrustFile)
	}
	return d, nil
}

// replayJournal applies the journal's deltas to st, up to the first line
// that is torn, damaged, of another network or does not apply. It returns
// the state, the lines applied, and why it stopped early (nil when it
// read to the end).
func replayJournal(b []byte, st *trust.State) (*trust.State, int, error) {
	applied := 0
	for len(b) > 0 {
		line, rest, ok := bytes.Cut(b, []byte{'\n'})
		if !ok {
			return st, applied, fmt.Errorf("%w: the journal's last line is torn", ErrTrustFile)
		}
		b = rest
		d, err := decodeJournalLine(line)
		if err != nil {
			return st, applied, err
		}
		if d.Network != st.Network() {
			return st, applied, fmt.Errorf("%w: a journal line of network %q", ErrTrustFile, d.Network)
		}
		next, err := st.Apply(d)
		if err != nil {
			return st, applied, fmt.Errorf("%w: journal line: %w", ErrTrustFile, err)
		}
		st = next
		applied++
	}
	return st, applied, nil
}

// trustStore writes the follower's snapshot and journal. It is used by
// the follower's persist loop alone.
type trustStore struct {
	dir      string
	journal  *os.File
	size     int64 // bytes in the journal
	snapSize int64 // bytes of the last snapshot
	index    uint64
	mustSnap bool // the next write is a snapshot (a full document, a damaged journal)
}

// newTrustStore opens the store of dir; needSnapshot makes its first write
// a snapshot (the journal on disk is damaged, or a snapshot is due).
func newTrustStore(dir string, index uint64, needSnapshot bool) *trustStore {
	s := &trustStore{dir: dir, index: index, mustSnap: needSnapshot}
	if fi, err := os.Stat(TrustPath(dir)); err == nil {
		s.snapSize = fi.Size()
	}
	if fi, err := os.Stat(JournalPath(dir)); err == nil {
		s.size = fi.Size()
	}
	return s
}

// write persists deltas (applied in this order since the last write), or
// a snapshot of cur() when one is due: snapshot is set, the journal
// outgrew the last snapshot, or the last write failed.
func (s *trustStore) write(cur func() *trust.State, deltas []trust.Delta, snapshot bool) error {
	if len(deltas) == 0 && !snapshot && !s.mustSnap {
		return nil
	}
	if snapshot || s.mustSnap || s.size > max(minCompact, s.snapSize) {
		st := cur()
		if st == nil {
			return nil
		}
		return s.snapshot(st)
	}
	var buf []byte
	index := s.index
	for _, d := range deltas {
		if d.Index <= index {
			continue // in the last snapshot already
		}
		line, err := journalLine(d)
		if err != nil {
			s.mustSnap = true
			return fmt.Errorf("agent: trust journal: %w", err)
		}
		buf = append(buf, line...)
		index = d.Index
	}
	if len(buf) == 0 {
		return nil
	}
	if err := s.append(buf); err != nil {
		// The journal may hold part of the lines now: start over.
		s.mustSnap = true
		return err
	}
	s.index = index
	return nil
}

func (s *trustStore) append(b []byte) error {
	if s.journal == nil {
		fh, err := os.OpenFile(JournalPath(s.dir), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			return fmt.Errorf("agent: trust journal: %w", err)
		}
		s.journal = fh
	}
	if _, err := s.journal.Write(b); err != nil {
		return fmt.Errorf("agent: trust journal: %w", err)
	}
	if err := s.journal.Sync(); err != nil {
		return fmt.Errorf("agent: trust journal: %w", err)
	}
	s.size += int64(len(b))
	return nil
}

// snapshot writes st as trust.json and empties the journal. A crash in
// between leaves journal lines at or below the snapshot's index, which a
// replay applies without change.
func (s *trustStore) snapshot(st *trust.State) error {
	s.mustSnap = true // until it is written
	doc := st.Document()
	b, err := json.Marshal(trustFile{Version: 2, Trust: doc})
	if err != nil {
		return fmt.Errorf("agent: encode trust document: %w", err)
	}
	if err := writeFile(TrustPath(s.dir), append(b, '\n'), 0o644); err != nil {
		return err
	}
	s.snapSize, s.index, s.mustSnap = int64(len(b)+1), st.Index(), false
	s.close()
	if err := os.Remove(JournalPath(s.dir)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.mustSnap = true
		return fmt.Errorf("agent: trust journal: %w", err)
	}
	s.size = 0
	return nil
}

func (s *trustStore) close() {
	if s.journal != nil {
		s.journal.Close()
		s.journal = nil
	}
}

// readJournal returns the journal of dir, nil when there is none.
func readJournal(dir string) ([]byte, error) {
	fh, err := os.Open(JournalPath(dir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	defer fh.Close()
	b, err := io.ReadAll(io.LimitReader(fh, maxTrustFile+1))
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	if len(b) > maxTrustFile {
		return nil, fmt.Errorf("%w: the journal is larger than %d bytes", ErrTrustFile, maxTrustFile)
	}
	return b, nil
}
