package gzmember

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"sync"

	"github.com/klauspost/compress/gzip"
)

// Members are inflated by klauspost/compress, a fork of compress/flate
// that refuses what compress/gzip refuses. libdeflate, several times
// faster, was used here in cgo builds until fuzzing found what it reads
// and compress/gzip refuses: an empty distance code used by a length,
// distance symbols 30 and 31, length symbols 286 and 287, more than 286
// length or 30 distance codes (TestGunzipRefusesWhatOnlyLenientInflatersRead
// and the seeds of FuzzGunzipMatchesCompressGzip). A member only a lenient
// inflater reads would pass inspect and sign and fail in rkt; proving a
// member takes a strict reader.

// readers keeps gzip readers (and their inflate state) between members.
var readers sync.Pool

// inflateMember proves that c is exactly one gzip member inflating to at
// most ChunkSize bytes, and returns those bytes (appended to dst). The
// member's own CRC-32 and ISIZE are checked by the gzip reader; every byte
// of c must be used by the member, none left over.
func inflateMember(c, dst []byte) ([]byte, error) {
	br := bytes.NewReader(c)
	zr, _ := readers.Get().(*gzip.Reader)
	var err error
	if zr == nil {
		zr, err = gzip.NewReader(br)
	} else {
		err = zr.Reset(br)
	}
	if err != nil {
		return nil, fmt.Errorf("bad header: %v", err)
	}
	defer readers.Put(zr)
	zr.Multistream(false)
	out := bytes.NewBuffer(dst[:0])
	if cap(dst) == 0 {
		out = bytes.NewBuffer(make([]byte, 0, min(int(binary.LittleEndian.Uint32(c[len(c)-4:])), ChunkSize)))
	}
	n, err := out.ReadFrom(io.LimitReader(zr, ChunkSize+1))
	switch {
	case err != nil:
		return nil, fmt.Errorf("inflating: %v", err)
	case n > ChunkSize:
		return nil, fmt.Errorf("inflates to more than %d bytes, more than any member of an ACI written by nix2aci", ChunkSize)
	case br.Len() != 0:
		return nil, fmt.Errorf("its claimed length has %d bytes after the member's end (a hidden second member or garbage)", br.Len())
	}
	return out.Bytes(), nil
}
