// Package ocisign makes and checks the signatures podman, skopeo and
// CRI-O check on container images: containers/image's "simple signing"
// (also called atomic container signatures).
//
// # Signatures
//
// A signature is an OpenPGP signed message, binary and not detached,
// whose signed content is a small JSON payload (Payload) naming the
// image by its manifest's digest and claiming an identity for it, a
// docker reference such as registry.example.com/app:1.0:
//
//	{"critical":{"identity":{"docker-reference":"registry.example.com/app:1.0"},
//	 "image":{"docker-manifest-digest":"sha256:…"},"type":"atomic container signature"},
//	 "optional":{"creator":"nix2aci …","timestamp":1700000000}}
//
// It signs the manifest's exact bytes (through their digest) and nothing
// else: the manifest pins the config and layers by digest, so whoever
// checks a signature must also check every blob against its digest.
// A pull checks the identity against the reference pulled; with podman's
// default matchRepoDigestOrExact, a pull by tag needs a signature for
// that very tag.
//
// Sign refuses keys the clients cannot check: podman 4.3 and skopeo 1.9
// verify with GnuPG 2.2 through gpgme and accept only signatures by the
// primary key of a key their policy names, and builds without gpgme have
// no EdDSA; RSA keys, which nix2aci key generate makes, work everywhere.
// Verify checks a signature as those clients do with a signedBy policy.
//
// # Where signatures go
//
// Registries keep no simple signing signatures; clients read them from a
// lookaside tree named in registries.d (lookaside: file:///DIR or an
// https URL serving the same tree):
//
//	DIR/<repository path>@sha256=<hex>/signature-1, signature-2, …
//
// where the repository path is the reference's, without the registry's
// host (library/busybox for docker.io/library/busybox) and the digest is
// the manifest's. WriteLookaside and ReadLookaside write and read it.
package ocisign
