package session

// The gossip layer of the peering issue (membership among node agents and the
// signed revocation bulletins of DESIGN.md) is built on memberlist. Importing it
// here keeps the known-good version of DESIGN.md in go.mod: without an import,
// `go mod tidy` drops the requirement, and a later `go get` would be free to pull
// memberlist v0.7, which needs go-metrics v0.7 and breaks raft-boltdb/v2.
// TestDependencyPins holds the whole set.
import _ "github.com/hashicorp/memberlist"
