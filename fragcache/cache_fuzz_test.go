package fragcache

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/nix2aci/nix2aci/gzmember"
)

// A cache entry is data from disk: any bytes must parse to an error or to
// an index whose chunks exactly cover the data before it, laid out as
// Write cuts a store path (full chunks, then a shorter last one), and no
// more of them, nor a longer index, than Write makes for the store path's
// NAR size.
func FuzzParseEntry(f *testing.F) {
	idx := []byte(`{"storePath":"/nix/store/x","chunks":[{"u":3,"uc":1,"c":2,"cc":2}]}`)
	var foot [16]byte
	binary.LittleEndian.PutUint64(foot[:8], uint64(len(idx)))
	copy(foot[8:], entryMagic)
	f.Add(append(append([]byte("ab"), idx...), foot[:]...), int64(1000))
	f.Add([]byte("N2ACIFR1"), int64(0))
	f.Fuzz(func(t *testing.T, b []byte, narSize int64) {
		max := maxEntryChunks(narSize)
		e, err := parseEntry(bytes.NewReader(b), int64(len(b)), "/nix/store/x", max)
		if err != nil {
			return
		}
		if int64(len(e.Chunks)) > max {
			t.Fatalf("%d chunks accepted for a NAR of %d bytes (at most %d)", len(e.Chunks), narSize, max)
		}
		n := int64(binary.LittleEndian.Uint64(b[len(b)-16:]))
		if n > maxIndexLen("/nix/store/x", max) {
			t.Fatalf("an index of %d bytes accepted for %d chunks", n, max)
		}
		var total int64
		for i, c := range e.Chunks {
			if c.off != total || c.C <= 0 || c.C > gzmember.MaxMember || c.U <= 0 || c.U > gzmember.ChunkSize || c.U != gzmember.ChunkSize && i != len(e.Chunks)-1 {
				t.Fatalf("bad chunk accepted: %+v", c)
			}
			total += int64(c.C)
		}
		if total+n+16 != int64(len(b)) {
			t.Fatalf("chunks cover %d bytes of a %d-byte entry with a %d-byte index", total, len(b), n)
		}
	})
}
