// Package fragcache keeps, between builds, the compressed members of each
// Nix store path's fragment of an archive, and hands them back only when
// they are proven to be the members the build would write. It knows
// gzmember's members and store paths, not archives: a writer (aci.Write)
// opens a Fragment of a store path for each build, as the gzmember.Store
// of the store path's segment.
//
// Guarantees:
//   - Nothing read from the cache is trusted. A member is taken only when
//     its tag, an HMAC-SHA256 under the cache's key (Cache.LoadKey,
//     Cache.UseKey), proves that the key's holder made that very member of
//     a chunk of that length and CRC-32, in that place, with these settings
//     (the entry's name binds them); the build still regenerates every
//     chunk (to hash it), so an altered entry (member, index, lengths,
//     CRCs, tags) can cost a compression, never other bytes: a cold and a
//     cached build are byte-identical. Without a key the cache is not used.
//   - Sizes are bounded before anything is read: an entry and its index
//     against the most a writer makes for the store path's NAR size.
//   - Entries are written to a temporary file and renamed; a failure loses
//     an entry, never a build, and leaves nothing open.
//   - The cache touches only what is provably its own: OpenCache refuses a
//     directory that holds other things, GC removes only its entries and
//     stale temporary files, never through a symlink.
//   - The key is refused inside the cache directory, when not a regular
//     file owned by this user, or when others may read it.
//
// Cache.TagRecord tags other records under the same key (the layer index
// of an output directory), in a message no member's tag begins with.
package fragcache
