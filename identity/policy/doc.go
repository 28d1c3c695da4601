// Package policy is keymesh's Cedar authorization: who (a verified token's
// principal) may take which action (one per API operation, see Actions) on
// which network.
//
// Call order: parse and validate a policy set with ParsePolicies (or take
// Default), build an Authorizer, and ask Decide (or DecideVerified) on every
// call; SetPolicies swaps in a new set when the replicated policies change.
// Allowed lists every action a principal may take, for POST /v1/authorize.
//
// # Model
//
// Policies are written against this schema (schema.cedar):
//
//	principal  Role::"ADMIN" | "NODE" | "NODE_CUSTODIAN" | "DATA_CUSTODIAN" | "USER"
//	action     Action::"cluster.read", ... (the constants of this package)
//	resource   Network::"<the caller's network>"
//	context    { subject: String, node: String, network: String, target: String, bound: Bool }
//
// so that, for instance, only bound tokens may open peering sessions:
//
//	@id("peering-needs-binding")
//	forbid (principal, action == Action::"peer.connect", resource) unless { context.bound };
//
// Each policy's @id annotation names it in Decision.Reasons. ParsePolicies
// refuses a policy that names an unknown role or action, or misuses the
// context, with the policy's position.
//
// # Actions
//
//	cluster.read          GET /v1/cluster/status, /v1/cluster/peers
//	cluster.join          a root server joins
//	cluster.remove        a root server is removed
//	node.list             node records
//	token.create          POST /v1/join-tokens
//	token.list            GET /v1/join-tokens
//	token.revoke          DELETE /v1/join-tokens/{id}
//	registration.list     GET /v1/registrations[/{id}]
//	registration.approve  POST /v1/registrations/{id}/approve
//	registration.deny     POST /v1/registrations/{id}/deny
//	revocation.create     POST /v1/revocations
//	revocation.list       GET /v1/revocations
//	policy.read           GET /v1/policies
//	policy.write          PUT /v1/policies
//	cert.renew            POST /v1/certs/renew (and key rotation)
//	ca.rotate             AS root rollover steps
//	trust.read            GET /v1/trust, /v1/ca/bundle, /v1/ca/crl, JWKS
//	trust.write           federated anchors, access list, exclusive membership
//	routeauth.read        route (origin) authorizations
//	routeauth.write       change route authorizations
//	peer.connect          open a peering session
//	route.announce        announce routes (UPDATE)
//	authorize.query       POST /v1/authorize
//	gossip.keys           GET /v1/gossip/keys (the gossip keyring)
//	metrics.read          GET /metrics
//
// # Default policies
//
// ADMIN: everything. NODE: cert.renew, trust.read, routeauth.read,
// peer.connect, route.announce, gossip.keys. NODE_CUSTODIAN: cluster.read, node.list,
// token.*, registration.*, revocation.*, trust.read. DATA_CUSTODIAN:
// cluster.read, policy.read, routeauth.*, revocation.list, trust.read. USER:
// trust.read. Every principal: authorize.query. policy.write is ADMIN's
// alone, since whoever writes policies can grant itself anything.
package policy
