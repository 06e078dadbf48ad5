// Package outdir writes a build's files (an image, its signature, its
// .rkt-args, its GC roots) beside each other and replaces the old ones as
// one step.
//
// Begin makes a private staging directory inside the output directory,
// ".nix2aci-stage-XXXXXX", and holds an exclusive flock on it for as long
// as the build runs. Files are written there under their final names;
// Commit renames them into the output directory (same file system, so
// each rename is atomic) while holding a lock on the output directory
// itself, so that two builds into one directory never interleave their
// files. A failed or interrupted build calls Abort, and the output
// directory is as it was: the previous image, signature and roots stay.
//
// A build killed outright (SIGKILL, power loss) leaves its staging
// directory behind, unlocked: the next Begin in that directory removes
// every staging directory whose lock it can take, and leaves alone those
// of builds still running.
package outdir
