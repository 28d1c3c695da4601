// Package api holds the wire types of the root servers' HTTPS API: its
// requests and answers, its error codes and the APIError every error
// answer decodes into. The root servers (package cluster) serve them;
// clients (cluster/client, the node agent, the CLI) speak them without
// importing the server, so that nothing of Raft reaches a node.
//
// # Errors
//
// Every error answer is {"error":{"code":"...","message":"..."}} with an
// HTTP status that fits. The codes are stable (Codes lists them all) and
// each has a sentinel error: an *APIError matches the sentinel of its code
// with errors.Is, so callers never look at a message's text:
//
//	if errors.Is(err, api.ErrNodeRevoked) { ... }
//
// # Request bodies
//
// Servers decode request bodies with DecodeStrict: names match
// case-sensitively, duplicate and unknown members are refused.
package api
