package rtr

import (
	"context"
	"math"
	"net/netip"

	"github.com/keymesh/keymesh/fsm"
)

// VRPOf is the VRP of a route authorization; ok is false when it names
// no AS (it is then not served to routers) or is not a valid prefix.
func VRPOf(a fsm.RouteAuth) (VRP, bool) {
	p, err := netip.ParsePrefix(a.Prefix)
	if err != nil || a.ASN == 0 || a.MaxLength < p.Bits() || a.MaxLength > p.Addr().BitLen() || a.MaxLength > math.MaxUint8 {
		return VRP{}, false
	}
	return VRP{Prefix: p.Masked(), MaxLen: uint8(a.MaxLength), ASN: a.ASN}, true
}

// VRPsOf is the VRPs of auths (those that name an AS).
func VRPsOf(auths []fsm.RouteAuth) []VRP {
	out := make([]VRP, 0, len(auths))
	for _, a := range auths {
		if v, ok := VRPOf(a); ok {
			out = append(out, v)
		}
	}
	return out
}

// Follow keeps c at store's route authorizations until ctx ends: nothing
// until the store holds a state, then a full load (and whenever the store's change history cannot say what
// changed), then each change as the store applies it, at the serial of
// the table's last change (fsm.Store.TableIndex).
func Follow(ctx context.Context, store *fsm.Store, c *Cache) error {
	var seen uint64 // the store index read last
	loaded := false
	for {
		store.Read(func(r fsm.Reader) {
			serial := r.TableIndex(fsm.TableRouteAuths)
			idx := r.Index()
			if idx == 0 {
				// a joining root before its first entry or snapshot: no
				// data (routers are answered No Data Available), not an
				// empty set
				return
			}
			if !loaded {
				c.Load(serial, VRPsOf(r.RouteAuths()))
				loaded, seen = true, idx
				return
			}
			ch := r.Changes(seen)
			seen = idx
			if ch.Reset {
				c.Load(serial, VRPsOf(r.RouteAuths()))
				return
			}
			tc := ch.Table(fsm.TableRouteAuths)
			if len(tc.Put) == 0 && len(tc.Deleted) == 0 {
				return
			}
			changed := make(map[netip.Prefix][]VRP, len(tc.Put)+len(tc.Deleted))
			for _, k := range tc.Deleted {
				if p, err := netip.ParsePrefix(k); err == nil {
					changed[p.Masked()] = nil
				}
			}
			for _, k := range tc.Put {
				p, err := netip.ParsePrefix(k)
				if err != nil {
					continue
				}
				p = p.Masked()
				changed[p] = nil
				if a, ok := r.RouteAuth(k); ok {
					if v, ok := VRPOf(a); ok {
						changed[p] = []VRP{v}
					}
				}
			}
			c.Update(serial, changed)
		})
		if _, err := store.WaitIndex(ctx, seen); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
}
