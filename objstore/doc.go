// Package objstore is where nix2aci serve keeps images for replicas to
// share: a Store (an S3-compatible bucket, or a directory) holding
// objects by key, with the two conditional writes replicas coordinate
// through, and the two small records they coordinate with:
//
//   - A Marker, written last for an image, after its .aci and .aci.asc:
//     it names both with their sizes and SHA-256, so that an image is
//     served only once both are complete. A marker read back is hostile
//     bytes: its size is bounded, its fields are checked, and Complete
//     checks that the objects it names are there with those sizes and
//     digests (the digest the store verified and kept at upload).
//   - A Lease per image being built: an owner and an expiry, created only
//     where none is (If-None-Match: *), renewed and taken over only from
//     the version read (If-Match: its ETag), so that of several replicas
//     asking for one new image one builds it, and a replica that dies
//     mid-build holds it for at most the lease's time.
//
// The package does not read the environment: credentials come in an
// aws.Config that the caller made.
package objstore
