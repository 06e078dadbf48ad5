// Package oci writes the images of a build plan as OCI images: an OCI
// image layout directory (what skopeo, podman and umoci read as
// oci:DIR:TAG), an oci-archive (that directory as one tar file) or a
// docker-archive (what docker load and podman load take).
//
// # Layers
//
// Each image of a plan becomes one layer, written by aci.Write with
// aci.AsLayer: the same entries by the same rules as in an ACI (fixed
// headers, depth-first order, store paths as independently compressed
// segments), but named from the container's root (nix/store/...) with no
// manifest. A layer's blob, and so its digest, depends only on its store
// paths and the compression settings: two apps on the same libraries
// share the blobs of their layers in any registry, and a warm build (the
// fragment cache keeps OCI segments apart from ACI ones) writes the same
// bytes as a cold one.
//
// # Config
//
// The image configuration is made from the app's appc manifest, so that
// an OCI image runs as its ACI does: the exec list's program becomes the
// Entrypoint and its arguments the Cmd; environment, user and group,
// working directory, ports (ExposedPorts), mount points (Volumes, except
// a thin image's store paths, which its .podman-args binds) and labels
// (less os and arch, which are the platform) carry over; "created" is the
// manifest's created annotation (SOURCE_DATE_EPOCH, else the epoch).
// Like rkt, which gives an app a PATH when it has none, the config then
// sets one.
//
// # Bases
//
// ReadLayout reads the one image of a layout for an app to be built on:
// its index, manifest and config, bounded and checked against their
// digests. Its layer blobs are only looked at (present, regular, of their
// size); LinkLayer hard-links them into the app's layout, so that the
// app's lowest layers are the base's very blobs.
//
// # Files
//
// Blobs, index.json, the oci-layout file and the archives' tar headers
// are all written here from fixed values (mode, owner 0, the epoch as
// mtime, names sorted), never from the file system, so the same plan
// gives the same bytes on every machine.
package oci
