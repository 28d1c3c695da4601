// Package identity mints and verifies keymesh tokens: JWTs that every node
// signs under its own key and that any holder of the replicated trust state
// verifies locally. It also encodes and decodes the JWKS those keys are
// published in. Authorization of verified principals is in identity/policy.
package identity
