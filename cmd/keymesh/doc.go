// Command keymesh is the command-line program of keymesh: it runs root
// servers and talks to their HTTP API as an operator would.
//
// It is wiring only. Flags, configuration and output live here; everything
// with logic worth testing lives in package cluster (servers), package
// cluster/agent (the node side: registration, collection, renewal) and
// package cluster/client (the API client).
//
// # Commands
//
//	keymesh root bootstrap|join|start        run a root server in the foreground
//	keymesh root token|status|remove         manage the root cluster
//	keymesh tokens create|list|revoke        join tokens for nodes (and roots)
//	keymesh registrations list|approve|deny  node registrations waiting for an operator
//	keymesh node join|renew|rotate-key|run   register a node, renew its certificate, rotate its key, run its agent
//	keymesh token mint|verify                mint a token under a node's own key; verify one
//	keymesh authorize TOKEN                  what a token's principal may do
//	keymesh policy get|set                   the Cedar policies that decide every admin call
//	keymesh revoke cert|token|key|node       commit a revocation
//	keymesh revocations list                 list revocations
//	keymesh health                           ask one server whether it has a leader
//	keymesh dev                              three root servers and three nodes on loopback, for trying things out
//
// # Finding a server
//
// Client commands find their server as Vault and Consul do. Flags beat the
// environment:
//
//	--server ADDR      or KEYMESH_SERVER
//	--ca-file FILE     or KEYMESH_CA_FILE
//	--credential FILE  or KEYMESH_CREDENTIAL
//	--token TOKEN      or KEYMESH_TOKEN: a bearer token (a keymesh JWT), or
//	--token-file FILE  the file holding one (the admin.token of bootstrap)
//	--data-dir DIR     a local root server's data directory: its API address
//	                   (server.json), its AS roots and its admin credential
//	                   (or, without one, its admin.token)
//
// Authentication (credential and token) is taken whole from the first of
// flags, data directory and environment that offers any, so that a
// credential given by flag is never mixed with a token from the environment.
//
// # Output and exit codes
//
// Every command that prints takes --output text|json; json is one object or
// list on one line. A failure prints one line, "keymesh: <what went wrong and
// what to do>", on stderr and exits 1; a usage error exits 2.
//
// # Nodes
//
// Node commands find everything in the node's data directory (--data-dir),
// made by "keymesh node join": the key, the certificate, the AS root and the
// server it registered with. A join without a token waits for an operator,
// showing the time it has waited (one line redrawn on a terminal, a plain
// line every 30 s otherwise); --no-wait, --timeout and Ctrl-C leave the
// registration pending, and "keymesh node join --resume --data-dir DIR"
// collects it later.
//
// "keymesh node run" runs the node agent: it keeps the certificate renewed,
// follows the trust state of the roots and serves a local API on agent.sock
// in the data directory. "keymesh token mint" and "keymesh token verify"
// use that agent when it answers; without it, mint signs with the key in the
// data directory and verify asks a root server.
package main
