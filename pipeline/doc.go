// Package pipeline builds ACIs: target -> packages -> closure -> manifest
// -> archives -> signatures, with a plain Go API (a Request in, a Result
// out) that the CLI, publishing and a server call alike.
//
// Build writes everything into a staging directory inside the output
// directory and moves it into place as one step (package outdir): a failed
// or interrupted build leaves the previous files as they were.
//
// # Kinds
//
// A fat image holds its whole closure; a thin one holds a mount point per
// store path and comes with a .rkt-args file of volumes; a layered one
// holds what is left of its closure once its most shared store paths have
// been moved into layer images, which its manifest lists as appc
// dependencies (by name, labels and image ID), so that rkt renders exactly
// those bytes beneath it.
//
// # Layers
//
// A layer is, as a rule, one store path, written as an image of its own:
//
//	name     PREFIX/<store path name, as an AC Identifier>
//	labels   version=<store hash>, os, arch, kind=layer
//	created  the Unix epoch
//
// and nothing else (no app, no symlink farm), so its name and bytes depend
// only on that store path and the compression options: whichever app asks
// for glibc, its layer is the same file with the same image ID, and a
// registry, a build farm or rkt's store keeps it once. One path per layer
// also makes the grouping stable without a model of which apps exist.
//
// The app image keeps only the target's own packages and the symlink farm,
// so a rebuild after the app's own path changed rewrites that small image
// and nothing else. When the closure has more paths besides those than the
// layer budget (MaxLayers), the MaxLayers-1 most popular get a layer each
// and the rest share the last layer, PREFIX/group, whose version is a hash
// of its store paths: it too depends only on its contents. Popularity is
// ranked as nixpkgs' buildLayeredImage ranks it: how many paths of the
// closure reach a path (itself included), so deep paths such as libc and
// shared libraries, which every app reaches through many routes, get
// layers of their own first whatever the app; ties go to the larger path,
// then to the store path's name.
//
// A later build into the same output directory reuses a layer file it
// wrote before, without reading it, when the file's size, inode, mtime
// and ctime are those recorded when it was written (the output directory's
// .nix2aci-layers.json, as git's index trusts stat data); a layer whose
// file changed in any way is written again.
package pipeline
