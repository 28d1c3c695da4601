package identity

// Principal is the role a token claims (the "principal" claim). Cedar policies
// (package identity/policy) decide what each principal may do.
type Principal string

// The known principals.
const (
	// PrincipalAdmin: full administrative access.
	PrincipalAdmin Principal = "ADMIN"
	// PrincipalNode: a mesh member: peering, routes, its own certificate.
	PrincipalNode Principal = "NODE"
	// PrincipalNodeCustodian: manages node lifecycle (registrations, join tokens, revocations).
	PrincipalNodeCustodian Principal = "NODE_CUSTODIAN"
	// PrincipalDataCustodian: manages data access and routing policy.
	PrincipalDataCustodian Principal = "DATA_CUSTODIAN"
	// PrincipalUser: an end user or API consumer: read-only.
	PrincipalUser Principal = "USER"
)

// Principals lists the known principals, most privileged first.
func Principals() []Principal {
	return []Principal{PrincipalAdmin, PrincipalNode, PrincipalNodeCustodian, PrincipalDataCustodian, PrincipalUser}
}

// Known reports whether p is one of the known principals.
func (p Principal) Known() bool {
	switch p {
	case PrincipalAdmin, PrincipalNode, PrincipalNodeCustodian, PrincipalDataCustodian, PrincipalUser:
		return true
	}
	return false
}
