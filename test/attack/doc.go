// Package attack is keymesh's attack suite: each test performs an attack
// end to end against real processes of the built binary on loopback (root
// servers, node agents, the CLI) and checks that it fails, that the
// refusal says why, and that nothing else changed. `make test` runs it
// with the other process tests.
//
// The attacks, by the credential the attacker holds:
//
//   - a NODE_CUSTODIAN node: root-join tokens, ADMIN or DATA_CUSTODIAN
//     join tokens, approvals and revocations beyond NODE and USER, policy
//     writes (privilege_test.go);
//   - a principal allowed to write policies, granting itself more
//     (privilege_test.go);
//   - a removed root server, and the certificates it signed; a revoked
//     key, certificate or node presented over mutual TLS, renewed with or
//     without a new key, or with a bearer token beside it; a revoked
//     node's agent (revocation_test.go);
//   - a node asking for names that are not its own, and a fake root
//     server presenting a valid node certificate to the CLI, the agent
//     and joining servers (impersonation_test.go);
//   - anyone on the network, flooding registrations and root joins
//     across every root server (limits_test.go);
//   - anyone sending malformed, duplicated or case-folded JSON, or
//     upper-case node ids (input_test.go).
package attack
