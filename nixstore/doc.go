// Package nixstore reads Nix closures: the set of store paths a root needs
// at run time, each with its references, hash and size.
//
// # How a closure is resolved
//
// Closure asks Nix twice, whatever the closure's size: `nix-store --query
// --requisites ROOTS...` lists every path in the closure, and one
// `nix-store --dump-db PATHS...` prints the registration record of all of
// them (path, NAR hash, NAR size, deriver, references). Spawning one process
// per path would cost seconds on a closure of a thousand paths; two calls
// cost a few milliseconds more than one.
//
// Inside a Nix build, the same information arrives as a file written by
// exportReferencesGraph (path, deriver, reference count, references; no
// hashes); ReadGraph and ReadGraphFiles parse it.
//
// Either way the graph is parsed as it is read, within limits
// (MaxGraphSize bytes, MaxGraphPaths store paths, MaxGraphReferences
// references), and each store path is held once however many paths refer
// to it: memory follows the graph, never the bytes read.
//
// Paths are returned sorted by store path, so everything built from a
// Closure is in a fixed order whatever order Nix printed.
package nixstore
