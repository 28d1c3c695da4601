package run

import (
	"context"
	"errors"
	"testing"
)

// TestGroup: every component runs; the end of ctx stops all and Run
// returns nil; the first failure stops the others and is returned, named;
// a component that finishes early leaves the others running; a panic is a
// failure.
func TestGroup(t *testing.T) {
	started := make(chan string, 3)
	waiter := func(name string) Component {
		return Func(func(ctx context.Context) error {
			started <- name
			<-ctx.Done()
			return nil
		})
	}
	var g Group
	g.Add("a", waiter("a"))
	g.Add("b", waiter("b"))
	g.Add("done early", Func(func(context.Context) error { return nil }))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	<-started
	<-started
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run after the context ended: %v", err)
	}

	boom := errors.New("boom")
	var f Group
	f.Add("waits", waiter("waits"))
	f.Add("fails", Func(func(ctx context.Context) error {
		<-started // after the other started
		return boom
	}))
	err := f.Run(context.Background())
	var re *Error
	if !errors.Is(err, boom) || !errors.As(err, &re) || re.Component != "fails" {
		t.Fatalf("Run with a failing component: %v", err)
	}

	var p Group
	p.Add("waits", waiter("waits"))
	p.Add("panics", Func(func(ctx context.Context) error {
		<-started
		panic("a bug")
	}))
	if err := p.Run(context.Background()); !errors.As(err, &re) || re.Component != "panics" {
		t.Fatalf("Run with a panicking component: %v", err)
	}
	if err := new(Group).Run(context.Background()); err == nil {
		t.Fatal("an empty group ran")
	}
}
