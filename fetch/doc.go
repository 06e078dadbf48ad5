// Package fetch gets a published image by its name and labels, as rkt
// fetch NAME does, and keeps it only once it is proven: signed by a key
// trusted for its name, a valid ACI, and the very image asked for. A build
// can then depend on it by image ID.
//
// # What Image does
//
//  1. Discovery, with appc's own client (github.com/appc/spec/discovery):
//     https://NAME?ac-discovery=1, then each shorter prefix of the name,
//     until a page has an ac-discovery meta tag whose template renders
//     with the name and labels ({name}, {version}, {os}, {arch}, {ext}).
//     As in rkt, the first endpoint found is used; a version not asked
//     for is "latest".
//  2. The signature (URL.aci.asc) first, at most 1 MiB: an image without
//     one, or whose signature no key of the trust store made (rkt checks
//     this first too), is refused before a byte of it is downloaded.
//     There are no unsigned bases.
//  3. The image, at most MaxSize bytes, into a temporary file in Dir.
//  4. sign.VerifyWith (Full) on those bytes, read once: a good signature
//     by a key the trust store trusts for the name the manifest holds
//     (rkt's trust store layout and semantics, see package sign), and a
//     valid ACI (aci.InspectLimited, capped at MaxSize uncompressed),
//     whose image ID is computed on the way.
//  5. The manifest's name must be the name asked for, and each label
//     asked for must be the manifest's: a key trusted for
//     example.com/other cannot have its image taken for example.com/base,
//     and a server cannot answer version 2 with version 1's files.
//  6. Only then are the two files renamed into Dir, under the flat file
//     name of the checked manifest (manifest.FlatFileName) and the same
//     plus .asc. No name from the network becomes a path.
//
// Every failure removes both temporary files: Dir never holds a half
// written or unproven image.
//
// # Hostile servers
//
// The discovery page, the signature and the image are hostile until
// proven. Every read is bounded: a discovery page at 1 MiB (the HTML is
// cut there), the signature at 1 MiB, the image at MaxSize (a
// Content-Length above the limit is refused before reading). Every
// request must get its answer's headers, and every read of its body some
// bytes, within StallTimeout, so that a server that stops sending fails
// the fetch instead of hanging it; the context cancels everything.
//
// Redirects: https to https is followed to any host (CDNs and object
// stores serve images from other hosts; the signature, not the host,
// proves the bytes); from plain http (InsecureHTTP only) a redirect is
// followed to the same host only, over http or https; https to http is
// refused, as is any other scheme; at most 10 redirects. Discovered image
// and signature URLs must be https, or http with InsecureHTTP.
//
// # appc's discovery client
//
// appc's discovery package sends its requests with a process-wide
// http.Client (discovery.Client) that has no timeout, no context, no
// bound on what it reads and follows any redirect. Importing this package
// wraps that client's transport once, at init: a request of a fetch is
// marked with a header naming the fetch (appc passes per-host headers
// through), and the wrapper sends it, without the mark, through that
// fetch's own client with its context, stall timeout, redirect policy and
// 1 MiB bound. Requests of anyone else using appc's discovery in the same
// process go to the original transport as before. appc's meta-tag parsing
// and its walk over the name's prefixes are thus used as they are.
//
// # Errors
//
// A failed verification (unknown or untrusted key, bad signature, invalid
// image) is a *sign.VerifyError, wrapped, with a hint naming the fix (rkt
// trust --prefix, nix2aci trust --prefix --trust-dir); a missing
// signature is one too, with Reason sign.ReasonMissing. An image that is
// not the one asked for is a *MismatchError; nothing found by discovery a
// *DiscoveryError; an HTTP failure, stall or refused redirect a
// *DownloadError; a file over its limit a *TooLargeError; a bad request a
// *UsageError. An interrupted fetch wraps the context's cause.
//
// Library code does not read the environment: the default client uses
// no proxy; give Options.Client to use one.
package fetch
