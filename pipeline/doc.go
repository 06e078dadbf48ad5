// Package pipeline builds ACIs and OCI images: target -> packages ->
// closure -> manifest -> plan -> archives -> signatures, with a plain Go
// API (a Request in, a Result out: request.go) that the CLI, publishing
// and a server call alike.
//
// Build writes everything into a staging directory inside the output
// directory and moves it into place as one step (package outdir): a failed
// or interrupted build leaves the previous files as they were.
//
// # Steps
//
// Build (build.go) checks the request and fills in its defaults, then
// takes the steps in order, each in a file of its own:
//
//  1. the target resolved to its packages and settings (inputs.go), the
//     names of its files chosen (outputs.go; oci.go for an OCI build) and
//     the staging directory made;
//  2. the packages built and their closure read (side by side when the
//     packages are in the store already), and the app's manifest and
//     skeleton made (inputs.go, skeleton.go, rules.go);
//  3. the cache of compressed store paths opened (build.go), the base
//     loaded (base.go, ocibase.go) and the plan made (plan.go, layers.go);
//  4. every image of the plan written, and signed when the request has a
//     signer (write.go; oci.go writes an OCI build's layers and image,
//     which Request.SignOCI signs as staged), and the files beside the
//     target's image staged (outputs.go);
//  5. everything moved into place at once, the GC roots registered and
//     the layers written recorded (outputs.go); then the cache is trimmed.
//
// # Plans, then one writer
//
// A build first decides, then writes. A planner makes a Plan: the images
// to write, each with its store paths, manifest and the images it depends
// on (plan.go): planSingle for fat and thin images, PlanGroups for an app
// on layer groups, a base and layers by popularity. One writer
// (writePlan, write.go) carries out any plan: it writes each image once
// those it depends on are written, completes its manifest with their
// image IDs, reuses a shared image the output directory proves it holds,
// and signs; Build then commits the staged files (outputs.go). A test of a
// planner needs no archive.
//
// # Layer groups and bases
//
// A recipe's layer groups (pkgs.Target.Layers) make a chain: each group
// is one image holding the closure of its packages less what the base and
// the groups below it hold, depending on the group directly below it (the
// lowest on the base); the app depends on the top of the chain. rkt
// renders every dependency of every image with no visited set, so the
// dependency graph is kept a tree: no image is reached twice, and no
// store path is in two images (Plan.check). A group is named
// PREFIX/<group name>, versioned by a digest of its store paths and the
// image IDs it depends on, and lists in its manifest the store paths it
// and everything below it hold (StorePathsAnnotation) and how many images
// that is (ImagesAnnotation): an app can be built on it as a Base without
// its bytes (LoadBase).
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
// A later build into the same output directory reuses a layer (or group)
// file it wrote before, without reading it, when the output directory's
// index (.nix2aci-layers.json) proves it: an entry whose tag under the
// cache key verifies, for the very layer asked for (name, labels, store
// paths and NAR hashes, compression, level, dependencies), with the
// file's size, inode, mtime and ctime unchanged. A layer whose file
// changed in any way is written again, and without a key every layer is.
package pipeline
