// Package run is the one lifecycle of keymesh's long-running parts: a
// Component runs until its context ends, and a Group runs several as one.
// Constructors start nothing; whoever wires the parts (cmd/keymesh) puts
// them in a Group and runs it.
package run

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// Component is a long-running part (a root server, a node agent, a
// certificate renewer, a session listener): Run runs it until ctx ends,
// then stops it and returns nil; an error means it failed and could not
// go on.
type Component interface {
	Run(ctx context.Context) error
}

// Func is a function as a Component.
type Func func(ctx context.Context) error

// Run calls f.
func (f Func) Run(ctx context.Context) error { return f(ctx) }

// Group runs named components together. The zero Group is empty and
// ready to use.
type Group struct {
	parts []part
}

type part struct {
	name string
	c    Component
}

// Add puts c in the group under name (for errors and logs). Add before
// Run.
func (g *Group) Add(name string, c Component) { g.parts = append(g.parts, part{name: name, c: c}) }

// Error is a component's failure: which one, and why.
type Error struct {
	Component string
	Err       error
}

func (e *Error) Error() string { return e.Component + ": " + e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// Run starts every component and returns when ctx ends (nil, once every
// component has returned) or when a component fails: the others are then
// stopped (their context ends) and Run returns that first failure as an
// *Error, once all have returned. A component that returns nil before ctx
// ends has finished its work; the others go on.
func (g *Group) Run(ctx context.Context) error {
	if len(g.parts) == 0 {
		return errors.New("run: an empty group")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	for _, p := range g.parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				if r := recover(); r != nil {
					once.Do(func() { first = &Error{Component: p.name, Err: fmt.Errorf("panic: %v", r)} })
					cancel()
				}
			}()
			if err := p.c.Run(ctx); err != nil && ctx.Err() == nil {
				once.Do(func() { first = &Error{Component: p.name, Err: err} })
				cancel()
			}
		}()
	}
	wg.Wait()
	return first
}
