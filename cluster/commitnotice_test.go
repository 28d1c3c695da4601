package cluster

import "testing"

// TestCommitNoticesQueue: notices to one follower merge while one is in
// flight to it, and a follower with a notice in flight (one that does not
// answer) holds up no other follower's.
func TestCommitNoticesQueue(t *testing.T) {
	c := newCommitNotices()
	c.add("r2", commitNotice{prev: 10, index: 11})
	<-c.ready
	got := c.take()
	if len(got) != 1 || got["r2"].index != 11 {
		t.Fatalf("first take: %+v", got)
	}
	// r2's notice is in flight and does not come back; r3's goes.
	c.add("r2", commitNotice{prev: 11, index: 12})
	c.add("r2", commitNotice{prev: 12, index: 14})
	c.add("r3", commitNotice{prev: 9, index: 13})
	<-c.ready
	got = c.take()
	if len(got) != 1 || got["r3"].index != 13 {
		t.Fatalf("with r2 in flight, take gave %+v, want r3's notice alone", got)
	}
	if again := c.take(); len(again) != 0 {
		t.Fatalf("both followers in flight, take gave %+v", again)
	}
	// r2 answers: its two pending notices went into one, and a round is wanted.
	c.done("r2")
	select {
	case <-c.ready:
	default:
		t.Fatal("r2's flight ended with a notice pending, and no round is wanted")
	}
	got = c.take()
	if n := got["r2"]; len(got) != 1 || n.prev != 12 || n.index != 14 {
		t.Fatalf("after r2's flight: %+v, want one notice with prev 12, index 14", got)
	}
	c.done("r3")
	select {
	case <-c.ready:
		t.Fatal("r3's flight ended with nothing pending, and a round is wanted")
	default:
	}
}
