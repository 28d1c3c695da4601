// Package routing holds route records, origin and path signatures, origin
// authorization, peer locks, export policy and the RIB.
//
// The package is a placeholder until the routing issue lands; see
// docs/architecture.md.
package routing
