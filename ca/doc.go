// Package ca is keymesh's X.509 certificate authority: keys, the AS root,
// the issuing intermediates of root servers, the certificate profiles of
// root servers, operators and nodes, CSR checks, CRLs, chain and identity
// checks, CA hash pinning, and sealing of the AS root key.
//
// It is a library of pure functions over certificates and keys. It keeps no
// state, starts nothing, and imports no other keymesh package. Time and
// randomness are parameters: every function that depends on the clock
// takes now, and every function that draws randomness takes an io.Reader
// where nil means crypto/rand. (Go draws ECDSA keys and signature nonces
// from its own secure source whatever the reader is.)
//
// # Hierarchy
//
//	AS root          ECDSA P-384, self-signed, 10 years, path length 2,
//	 |               critical name constraint: URIs under spiffe://<network>/ only.
//	 |               Its key lives only sealed (Seal, AES-256-GCM) in the
//	 |               replicated state, unsealed in root servers' memory.
//	 +-- issuing intermediate, one per root server (SignIntermediate)
//	 |    |          CA, path length 0, 1 year, spiffe://<network>/root/<server>
//	 |    +-- root server TLS certificate (SignServerTLS): serverAuth+clientAuth,
//	 |    |          spiffe://<network>/root/<server>, the server's hosts
//	 |    +-- node certificates (SignNode): serverAuth+clientAuth, 24 h,
//	 |               spiffe://<network>/node/<id>, DNS names
//	 +-- admin certificates (SignAdmin), or under an intermediate:
//	                 clientAuth, spiffe://<network>/admin/<name>
//
// Identities live in the single URI SAN (IdentityOf, ParseIdentity); they
// are SPIFFE IDs, so SPIFFE tooling reads them. A compromised root server
// is cut off by revoking its intermediate alone (CreateCRL of the root).
//
// # Bootstrap (first root server)
//
//  1. root := NewRoot(network, now, rnd)
//  2. sealKey := NewSealKey(rnd); WriteSealKeyFile(dir/seal.key, sealKey)
//  3. sealed := SealSigner(sealKey, root.Key, network, rnd) → replicated state,
//     with root.Cert; Hash(root.Cert) is the CA hash operators pin.
//  4. issuing key := GenerateKey(KeyP384, rnd); WriteKeyFile;
//     cert := SignIntermediate(root, key.Public(), network, name, now, rnd)
//  5. tls key := GenerateKey; SignServerTLS(Signer{cert, key}, ...)
//  6. admin key := GenerateKey; SignAdmin(root or issuer, ...); WriteKeyFile,
//     WriteCertsFile.
//
// # Root join
//
// The joining server dials with PinnedTLSConfig(caHash, addr, clock), or
// its own tls.Config whose VerifyConnection calls VerifyPinned(rawCerts,
// caHash, addr, now); servers therefore send leaf, intermediate and root.
// A server that holds the AS root (OpenSigner of the sealed key) signs the
// newcomer's intermediate with SignIntermediate and its TLS certificate
// with SignServerTLS. From then on both sides verify with VerifyChain or
// VerifyIdentity against the root.
//
// # Rotation
//
// A successor root is made with NewRoot and published as a prepared trust
// anchor; CrossSign(old, new.Cert) lets verifiers that trust only the old
// root accept the new hierarchy meanwhile (hence the root's path length 2).
//
// # Node registration
//
//  1. Node: key := GenerateKey; WriteKeyFile (0600, never sent);
//     csr := NewCSR(key, Identity{network, KindNode, id}, dns, rnd).
//  2. Root server, before proposing: req := CheckCSR(csr). Only its
//     public key is used from then on.
//  3. After approval is committed: SignNode(issuer, NodeRequest{PublicKey:
//     req.PublicKey, Network, NodeID, DNSNames from the registration,
//     Validity, Now: proposer's time}, rnd). The serial's uniqueness per
//     issuer is the replicated state's job.
//  4. Peers check certificates with VerifyIdentity (or VerifyChain and
//     IdentityOf) against the trust anchors, and CRLs with CheckCRL.
package ca
