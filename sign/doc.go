// Package sign signs ACIs with OpenPGP keys and verifies them the way a
// deploy pipeline, and rkt, decide whom to trust.
//
// # Signatures
//
// Detached writes an ASCII-armored detached signature over the exact bytes
// of an image, hashed with SHA-512, streaming the image. Signatures made
// here also carry a non-critical notation naming the image and its image ID
// (rkt and gpg ignore it), so that a signature checked against the wrong
// file can be told apart from a file changed after signing. Verify refuses
// SHA-1 and MD5 signatures whoever made them.
//
// Every RSA signature written here is as long as the key's modulus.
// OpenPGP writes the signature as an MPI, without its leading zero bytes,
// so one in 256 would be shorter; rkt's x/crypto/openpgp passes those
// bytes to crypto/rsa unpadded, and an rkt built with Go 1.20 or later
// refuses them. Detached signs again with a new salt until the signature
// is full-length, and GenerateKey does the same for a new key's
// self-signatures, which rkt checks when it reads the key. Verify accepts
// short signatures, which gpg and others make.
//
// RSA keys are the default because rkt checks signatures with Go's old
// golang.org/x/crypto/openpgp, which cannot verify EdDSA; ed25519 keys are
// allowed for pipelines that verify with nix2aci or gpg only.
//
// # Trust
//
// A trust store has rkt's layout:
//
//	DIR/root.d/<fingerprint>                 trusted for every image name
//	DIR/prefix.d/<prefix>/<fingerprint>      trusted for names under <prefix>
//
// Each file holds one armored public key and is named by its lowercase
// 40-hex-digit fingerprint; a file whose name is not its key's fingerprint
// makes the store unreadable, as in rkt.
//
// A key under prefix.d/example.com/foo is trusted for example.com/foo and
// example.com/foo/bar, but not for example.com/foobar: prefixes match whole
// path components. rkt itself compares names as plain strings, so it would
// accept example.com/foobar; we are deliberately stricter, since a
// publisher trusted for one project should not sign its sibling.
//
// Keys given as a keyring (Trust.AddRoot) are trusted for every name.
//
// Verification succeeds only if the signature is good, made with SHA-2 or
// better, by a key that is neither expired nor revoked, and that key is
// trusted for the image's name. Each failure is a *VerifyError with its own
// Reason.
//
// # Dependencies
//
// A layered app's manifest lists the images rkt renders beneath it.
// VerifyDependencies checks that whole tree from the files at hand
// (DependencyFiles: a .deps file, a build's output directory or a site):
// each dependency pinned by image ID, its signature verified like the
// app's with a key trusted for the dependency's own name, its image ID
// computed from its file equal to the pin; cycles and images reached
// twice (which rkt, keeping no visited set, would fetch forever or render
// twice) are refused, and depth and size are bounded. Every file is
// opened through an os.Root on its directory, without blocking; a .deps
// file must be what the shell passes to rkt fetch as plain .aci file
// names.
package sign
