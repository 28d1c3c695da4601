// Package identity mints and verifies keymesh tokens: JWTs that every node
// signs under its own key (no signing service in the path) and that any
// holder of the replicated trust state verifies locally. It also builds and
// strictly decodes the JWKS those keys are published in. Authorization of a
// verified token's principal is in the subpackage identity/policy (Cedar).
//
// Call order. A node builds a Minter from its key and certificate and mints;
// its JWK (Minter.JWK, kid = RFC 7638 thumbprint, x5c = the certificate
// chain) enters the replicated JWKS when its certificate is issued. A
// verifier holds a KeySource (e.g. a KeySet filled from the replicated
// JWKS), a RevocationSource (e.g. a RevocationSet) and the TrustAnchors,
// builds a Verifier, calls Verify for every token, and calls Invalidate
// whenever the trust state changes (SetAnchors when the anchors do).
//
// # Tokens
//
// A token is a JWS compact serialization, header {"alg","kid","typ":"JWT"},
// with the claims of Claims: iss = sub = the node's SPIFFE ID
// spiffe://<network>/<kind>/<name>, aud (a string or a list), exp, nbf, iat
// (whole seconds), jti (128 random bits, base64url), principal (ADMIN, NODE,
// NODE_CUSTODIAN, DATA_CUSTODIAN, USER) and, for a token bound to a TLS
// certificate, cnf {"x5t#S256": base64url(SHA-256(DER))} (RFC 8705).
//
// # Minting
//
// The algorithm follows the key: ES384 for P-384 (the default key type),
// ES256 for P-256, EdDSA for Ed25519. ECDSA signatures are the fixed-width
// r||s of RFC 7518 §3.4, converted from the signer's ASN.1. The header is
// encoded once per Minter; a mint is one JSON encoding, one random jti and
// one signature. A token never outlives its key's certificate: exp = now +
// TTL is clipped to the earliest NotAfter of the certificate chain, and a
// mint is refused (ErrMint) when the clipped lifetime would be shorter than
// MinterConfig.MinLifetime (default 30 s) or the certificate is not yet
// valid. Clipping rather than refusing keeps agents working in the last
// hours of a certificate; the refusal near the end tells an agent that failed
// to renew. The Key may be any crypto.Signer; it is never exported.
//
// # Verification order
//
// Verify runs these checks in order; the first that fails is returned as a
// *VerifyError whose Reason is a stable code and whose Err wraps the sentinel
// in parentheses:
//
//  1. size <= MaxTokenSize, default 8 KiB (ErrTooLarge); then the cache (below);
//  2. strict compact JWS: three base64url parts without padding, a header of
//     exactly alg, kid and optional typ "JWT" in strict JSON (no duplicate
//     names, valid UTF-8) (ErrMalformed);
//  3. alg on the allow-list ES256, ES384, EdDSA; never none, HS*, RS*
//     (ErrAlgNotAllowed);
//  4. the key by kid; an unknown kid makes one refresh of the KeySource if it
//     is a Refresher, at most once per RefreshCooldown (ErrUnknownKey);
//  5. alg fits the key: ES256 only for P-256, ES384 only for P-384, EdDSA
//     only for Ed25519 (ErrAlgKeyMismatch);
//  6. the signature (ErrSignature); only then are the claims decoded, strictly
//     and with every claim required (ErrClaims);
//  7. the key's certificate chain: the leaf holds the key (ErrKeyCertMismatch),
//     carries one SPIFFE ID whose network is on the access list
//     (ErrNetworkNotAccepted) and verifies to that network's roots (ErrChain);
//  8. the key's state: active, or retiring and the token issued before
//     RetiringSince; staged keys do not verify (ErrKeyState); the token
//     neither issued after nor outliving the key's or leaf's NotAfter
//     (ErrKeyExpired);
//  9. revocation of the jti, the kid, the serial of every certificate of the
//     key's chain, and the node (ErrTokenRevoked, ErrKeyRevoked,
//     ErrCertRevoked, ErrNodeRevoked; all wrap ErrRevoked);
//  10. time, with Skew (default 30 s): now <= exp+skew (ErrExpired), now >=
//     nbf-skew (ErrNotYetValid), iat <= now+skew (ErrIssuedInFuture);
//  11. iss == sub (ErrIssuer); sub == the leaf's SPIFFE ID (ErrSubject); the
//     key's owner == the leaf's name (ErrKeyCertMismatch);
//  12. principal known (ErrPrincipal) and among the key's Principals
//     (ErrPrincipalNotGranted): a node cannot promote itself;
//  13. per request: an audience the verifier answers to (ErrAudience); cnf
//     equal to the presented certificate's thumbprint (ErrBinding), a bound
//     token without a presented certificate or an unbound one where
//     RequireBinding is set (ErrBindingMissing).
//
// # Caches and invalidation
//
// Two caches, both emptied by Invalidate and SetAnchors (each bumps
// Generation):
//
//   - Verified tokens, keyed by the SHA-256 of the token, bounded by
//     CacheSize (default 10000; when full, expired entries go first, then
//     arbitrary ones), each entry expiring at exp+skew. A hit re-checks the
//     four revocations (so a revocation is refused at once, even before
//     Invalidate), the audience and the binding; nothing else. A cached
//     token therefore outlives a key removal or state change until
//     Invalidate: call it on every change of the trust state.
//   - Verified chains, per kid, tagged with the anchors generation and the
//     exact certificates: a renewed certificate for the same key, a new
//     generation, or a time outside the chain's validity means a fresh x509
//     verification. The chain check costs about two signature verifications,
//     so it is done once per key, not per token.
//
// A verification racing with Invalidate is not cached.
//
// # Cedar actions
//
// Package identity/policy lists an action per API operation (cluster.read,
// cluster.join, cluster.remove, node.list, token.create, token.list,
// token.revoke, registration.list, registration.approve, registration.deny,
// revocation.create, revocation.list, policy.read, policy.write, cert.renew,
// ca.rotate, trust.read, trust.write, routeauth.read, routeauth.write,
// peer.connect, route.announce, authorize.query, metrics.read), the default
// policies, ParsePolicies (validated against the schema, a bad policy refused
// with its position) and an Authorizer whose Decide answers for a principal,
// an action and a context, and whose Allowed lists what a principal may do.
package identity
