// Package serve is an appc discovery server that builds images on
// demand: a GET of HOST/pkg1/pkg2 (rkt fetch HOST/pkg1/pkg2) is answered
// with a signed, layered image of those packages, built by the pipeline
// the first time it is asked for and published into a data directory,
// then served from there.
//
// Its one job is to turn a name into a published image, and what it
// guarantees:
//
//   - The data directory is always a valid publish tree (package publish
//     writes it, staging and renaming): copied to any static host, the same
//     rkt fetch works without the server. Images in it are served from disk
//     across restarts; nothing is built twice for one name and version.
//   - Any number of concurrent requests for one image start one build
//     (golang.org/x/sync/singleflight); at most MaxBuilds run at a time,
//     at most Queue more wait, and beyond that a request is answered 503
//     with Retry-After.
//   - A name of packages that are neither a recipe nor a top-level
//     attribute of the package set (a dotted one by its first part) is
//     answered 404 naming them at once, on discovery too: the recipe names
//     and, in one Nix evaluation, the package set's attribute names for
//     each system are read at start, so that unknown names take no build
//     slot and no evaluation. A package set that cannot be read stops the
//     start.
//   - A build has a deadline: past it the build is cancelled, Nix
//     processes included, the answer is 504 and nothing is left behind.
//   - Every failure is answered with a status that says what kind it is
//     and a plain-text body that says why (404 naming unknown packages,
//     504 for a deadline, 502 with Nix's message, bounded); a failed name
//     is remembered for FailureTTL, so a storm of requests for it starts
//     one build.
//   - A name that is not lower-case AC Identifier components under the
//     prefix (no "..", no empty component, bounded length and count) is
//     refused with 400 before anything touches the disk.
//
// With Options.Store (package objstore: an S3-compatible bucket), the
// data directory is a staging tree: images built are published there,
// then uploaded (layers first, each image before its signature, a
// completion marker last), and requests for them are answered with a
// redirect to the store, only once the marker proves both objects
// complete. Replicas on one store build a name once between them:
// through a lease in the store, created with a conditional write and
// taken over when its holder stops renewing it (see store.go).
//
// The same names are answered through the OCI distribution pull API
// (podman pull HOST/curl/jq), as OCI images built on their first request,
// stored beside the publish tree and signed at request time for the
// reference the client asked for (see registry.go).
//
// What a name and a version mean: the name is the prefix followed by
// meta names, then package names (a recipe of the built-in set or of
// Options.Recipes, else an attribute of the package set: nixpkgs, the
// offline set or Options.Flake, dotted attributes included); the image
// holds those packages and CA certificates, for the Nix system the meta
// name or the file's arch label asks for, when it is one of
// Options.Systems (else 422 before anything is built). Meta names:
// "shell" adds a shell and coreutils, "arm64" and "amd64" choose the
// system. Each image's nix2aci.io/package-set annotation names its
// package set (Options.Source). The version is Options.Version, a label
// naming what determines the bytes (the package set and nix2aci's build,
// see VersionLabel); "latest" is served as the current label's image.
package serve
