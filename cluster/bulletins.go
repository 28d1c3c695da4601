package cluster

import (
	"github.com/keymesh/keymesh/identity/trust"
	"github.com/keymesh/keymesh/session/gossip"
)

// signBulletins signs the revocations of a trust delta as gossip
// bulletins with this server's issuing key: the range of Raft indexes
// (Since, Index], the revocations, the time. Followers that reach a root
// apply the delta and spread the bulletins to the nodes that cannot (see
// session/gossip). An answer is built once per index and position of its
// followers (trustAnswers), so a batch is signed once per position, not
// per follower. A failure leaves the delta without bulletins: the trust
// sync carries the revocations anyway.
func (s *Server) signBulletins(d trust.Delta) [][]byte {
	revs := make([]gossip.Revocation, 0, len(d.Put.Revocations))
	for _, r := range d.Put.Revocations {
		revs = append(revs, gossip.Revocation{Kind: string(r.Kind), ID: r.ID, Time: r.Time.Unix()})
	}
	bs, err := gossip.SignBulletins(s.network, d.Since+1, d.Index, revs, s.opts.Clock(), s.issuer.Cert, s.issuer.Key)
	if err != nil {
		s.log.Warn("could not sign the bulletins of a revocation batch; the trust sync carries it alone", "from", d.Since+1, "to", d.Index, "error", err)
		return nil
	}
	out := make([][]byte, 0, len(bs))
	for _, b := range bs {
		enc, err := b.Encode()
		if err != nil {
			return nil
		}
		out = append(out, enc)
	}
	s.metrics.bulletins.Add(float64(len(out)))
	return out
}
