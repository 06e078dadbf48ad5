// Package gzmember writes a byte stream as a sequence of independent
// compressed members, in parallel and deterministically, and reads such a
// stream back, proving every member's claim about itself. It knows
// nothing of what the stream holds (tar, ACIs).
//
// # Writing
//
// A gzip file may hold several members, and readers (Go, GNU tar, rkt)
// decompress them as one stream. A Writer cuts what is written to it into
// chunks of at most ChunkSize bytes and compresses each as a member of its
// own, on Config.Jobs cores at once, writing the members in order. The
// caller cuts the stream into segments (Cut, Begin): no chunk spans two, so
// a segment's members depend only on its own bytes and the Config
// (Config.MemberFormat names all of it), never on the number of jobs, the
// timing, or what comes before it. A segment may have a Store, which keeps
// its members (a cache) and may offer them back; the Writer takes an
// offered member only when the Store proves it is the member the Writer
// would make, so that a Writer with a Store writes the same bytes as one
// without. Memory is bounded: at most 12 chunks are in flight, whatever
// the core count.
//
// Each gzip member's header carries the member's length in an RFC 1952
// extra subfield ("N2", as BGZF does with "BC"); other readers skip it.
// NewReader uses it to find member boundaries without inflating, and
// inflates the members on every core; any member without it is read
// sequentially. With Xz each chunk is an xz stream of its own; with None
// the chunks are written as they are.
//
// # Reading: one reading of a stream
//
// Whatever reads a stream to judge it must see the bytes every other
// reader sees, so the length field is a claim to prove, not a fact: each
// claimed member must be exactly one gzip member, using every claimed
// byte, whose CRC-32 and size match and which inflates to at most
// ChunkSize bytes; otherwise the read fails (a *MemberError). NewReader
// thus yields exactly what compress/gzip yields, or an error
// (FuzzGunzipMatchesCompressGzip checks it). Only members whose header is
// exactly a Writer's (FEXTRA and no other flag) are taken on the fast
// path; members are inflated by klauspost/compress, as strict as
// compress/gzip (a faster, more lenient inflater is no proof). Memory is
// bounded by design: at most 16 members of at most MaxMember compressed
// and ChunkSize inflated bytes are held, whatever the core count.
package gzmember
