// Package manifest makes and checks the appc image manifests of nix2aci's
// images: what rkt reads from an image's "manifest" file to know its name,
// labels, app and dependencies.
//
// A Spec says what an image is (name, version, Nix system, command, user
// and group, environment, ports, mount points, isolators, labels and
// annotations), as a recipe gives it; Overrides are the same settings given
// on the command line for one build, and Apply writes them over the
// recipe's. New turns a Spec into a schema.ImageManifest, validated by
// appc's own types, and Marshal writes it as the bytes an image holds.
//
// Names and labels: CheckIdentifier holds a name a user typed (--name, a
// recipe's name) to appc's AC Identifier grammar exactly, never rewriting
// it, and suggests the nearest valid one; Identifier makes a valid AC
// Identifier of a name nix2aci derives. OSArch and SystemOf map a Nix
// system to appc's os and arch labels and back. FileName and FlatFileName
// name an image's file after its manifest, always as one path component
// (a NameError when a name or label cannot be one).
//
// Checks that keep an image runnable: CheckUserGroup (a number rkt's stage1
// reads as it is meant, up to MaxID), CheckEnvName, CheckLabel and
// CheckAnnotation, and MaxSize, the largest manifest that inspect, sign and
// verify read (TooLargeError names what took the room).
//
// Kinds of image: StoreMounts gives a thin image one read-only mount point
// per store path, named by MountName, and RktVolumeArgs writes the
// <image>.rkt-args that binds them from the host's store;
// CheckRktVolumeArgs accepts an .rkt-args file only if it binds exactly
// those paths, split by ShellWords as the shell splits $(cat FILE) (a
// layered app's .deps file is split the same way).
// NewLayer makes a layer image's manifest, AddDependencies pins the layers
// an app is rendered on, and SetLabel changes a label.
package manifest
