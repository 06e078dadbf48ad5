//go:build cgo

package gzmember

/*
#cgo LDFLAGS: -ldeflate
#include <libdeflate.h>
*/
import "C"

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"unsafe"
)

// With cgo, members are inflated by libdeflate, several times faster than
// Go's inflaters: it proves a member in one call (gzip header, deflate
// stream, CRC-32 and ISIZE checked, and the number of bytes the member
// used reported). FuzzGunzipMatchesCompressGzip holds it to compress/gzip.

type libdeflate struct {
	d *C.struct_libdeflate_decompressor
}

var decompressors = sync.Pool{New: func() any {
	z := &libdeflate{d: C.libdeflate_alloc_decompressor()}
	if z.d == nil {
		return nil
	}
	runtime.SetFinalizer(z, func(z *libdeflate) { C.libdeflate_free_decompressor(z.d) })
	return z
}}

// inflateMember proves that c is exactly one gzip member inflating to at
// most ChunkSize bytes, and returns those bytes (in dst's memory when it
// has room). The member's own CRC-32 and ISIZE are checked; every byte of
// c must be used by the member, none left over.
func inflateMember(c, dst []byte) ([]byte, error) {
	if len(c) == 0 {
		return nil, errors.New("empty member")
	}
	if cap(dst) < ChunkSize {
		dst = make([]byte, ChunkSize)
	}
	dst = dst[:ChunkSize]
	z, _ := decompressors.Get().(*libdeflate)
	if z == nil {
		return nil, errors.New("out of memory for a decompressor")
	}
	defer decompressors.Put(z)
	var used, n C.size_t
	r := C.libdeflate_gzip_decompress_ex(z.d, unsafe.Pointer(&c[0]), C.size_t(len(c)), unsafe.Pointer(&dst[0]), C.size_t(len(dst)), &used, &n)
	switch r {
	case C.LIBDEFLATE_SUCCESS:
	case C.LIBDEFLATE_INSUFFICIENT_SPACE:
		return nil, fmt.Errorf("inflates to more than %d bytes, more than any member of an ACI written by nix2aci", ChunkSize)
	default:
		return nil, errors.New("inflating: not a valid gzip member (bad deflate data, CRC-32 or size)")
	}
	if int(used) != len(c) {
		return nil, fmt.Errorf("its claimed length has %d bytes after the member's end (a hidden second member or garbage)", len(c)-int(used))
	}
	return dst[:n], nil
}
