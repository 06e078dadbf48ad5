// Package manifest builds appc image manifests for Nix closures.
//
// A Spec says what an image is (name, version, Nix system, command, and the
// rest of an app's settings, as a recipe gives them); New turns it into a
// schema.ImageManifest validated by appc's own types. Names are made valid AC
// Identifiers by Identifier, Nix systems become appc os/arch labels by
// OSArch, and store paths become stable, unique AC Names for thin images'
// mount points by MountName.
package manifest
