// Package aci writes and reads App Container Images (ACIs): a tar archive
// holding a JSON image manifest named "manifest" and a root filesystem under
// "rootfs/", optionally compressed.
//
// # Archive layout
//
// Write produces one deterministic archive for one closure:
//
//	manifest                       first entry, so readers find it at once
//	rootfs/                        0755
//	rootfs/<farm before "nix">     the symlink farm (bin/, lib/, ...)
//	rootfs/nix/, rootfs/nix/store/ 0755, explicit
//	rootfs/nix/store/<path>...     one fragment per store path (fat), or one
//	                               empty mount target per store path (thin)
//	rootfs/<farm after "nix">      the rest of the farm
//	end-of-archive blocks
//
// Every tar header is written here, never copied from the file system:
// uid and gid 0 (but for an Extra's own Uid and Gid: a recipe's path
// rules), no user or group names, mode and mtime as the store holds
// them (the farm and the fixed directories take the build time), entries in
// depth-first order with each directory's children sorted by name. Within a
// store path, a file whose contents and mode equal an earlier file's is
// written as a hard link to it, whatever the inodes on disk say: the bytes
// are a function of the store's contents, the same whether or not
// nix-store --optimise has linked identical files.
//
// # Compression and the fragment cache
//
// Write hands the tar stream to gzmember's Writer, which compresses it as
// a sequence of independent members of at most gzmember.ChunkSize bytes,
// in segments no member spans: one for the header (manifest and early
// farm), one for each store path's tar fragment, and one for the trailer.
// A store path's fragment never refers to bytes outside itself (its hard
// links never leave it), so its compressed members depend only on the
// store path's contents and the compression settings. That buys three
// things at once: chunks compress in parallel on every core with
// deterministic output; a store path's members can be cached and reused
// by a later build (see fragcache); and a cold build and a cached build of the
// same closure are byte-identical.
//
// # Reading: one reading of an archive
//
// Whatever reads an image to judge it (inspect, sign, verify) must see the
// bytes rkt will run: gzip is read by gzmember.NewReader, which proves
// every member's length claim and so yields exactly what compress/gzip
// yields, or an error (see gzmember). Memory is bounded by design: the
// members held are gzmember's bound; the manifest is capped at
// MaxManifestSize from its tar header, before it is read; xz dictionaries
// at 64 MiB; the names remembered at 64 MiB. InspectLimited also caps the
// uncompressed size.
//
// Inspect then reads the tar stream as rkt's extractor would, and rejects
// whatever two extractors could read differently or that could reach
// outside the image: a second "manifest" entry, a manifest that is not a
// regular file named exactly "manifest" (rkt takes the first entry so
// named), entries outside rootfs/, absolute or non-canonical names, ".."
// components, duplicate names, entries written through a symlink or a
// file, hard links to anything but a file earlier in the image, entry
// types other than files, directories, links, devices and FIFOs, and a
// tar stream without its end-of-archive marker (a file cut at an entry
// boundary). Symlinks themselves may point anywhere: they are resolved
// inside the container's root.
//
// The image ID is the SHA-512 of the uncompressed tar stream, computed while
// writing. A cached build still regenerates each store path's uncompressed
// fragment to hash it (reading the store is cheap; compressing is not), and
// takes a cached member only when the cache proves it is the member this
// build would write for that chunk (see fragcache); any other member is
// compressed afresh.
package aci
