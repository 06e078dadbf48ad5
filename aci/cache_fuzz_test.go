package aci

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// A cache entry is data from disk: any bytes must parse to an error or to
// an index whose chunks exactly cover the data before it.
func FuzzParseEntry(f *testing.F) {
	idx := []byte(`{"storePath":"/nix/store/x","chunks":[{"u":3,"uc":1,"c":2,"cc":2}]}`)
	var foot [16]byte
	binary.LittleEndian.PutUint64(foot[:8], uint64(len(idx)))
	copy(foot[8:], entryMagic)
	f.Add(append(append([]byte("ab"), idx...), foot[:]...))
	f.Add([]byte("N2ACIFR1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := parseEntry(bytes.NewReader(b), int64(len(b)), "/nix/store/x")
		if err != nil {
			return
		}
		var total int64
		for _, c := range e.Chunks {
			if c.off != total || c.C <= 0 || c.U <= 0 || c.U > ChunkSize {
				t.Fatalf("bad chunk accepted: %+v", c)
			}
			total += int64(c.C)
		}
		if total > int64(len(b)) {
			t.Fatalf("chunks cover %d bytes of a %d-byte entry", total, len(b))
		}
	})
}
