package gzmember

import (
	"bufio"
	"bytes"
	stdgzip "compress/gzip"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"

	"github.com/klauspost/compress/gzip"
)

func members(t testing.TB, parts ...[]byte) []byte {
	var out bytes.Buffer
	z := compressor{cfg: Config{Compression: Gzip, Level: DefaultLevel}}
	for _, p := range parts {
		if err := z.compress(&out, p); err != nil {
			t.Fatal(err)
		}
	}
	return out.Bytes()
}

func foreign(parts ...[]byte) []byte {
	var out bytes.Buffer
	for _, p := range parts {
		zw := stdgzip.NewWriter(&out)
		zw.Write(p)
		zw.Close()
	}
	return out.Bytes()
}

// claiming returns a member of data in our format whose N2 field claims
// length n instead of its own.
func claiming(t testing.TB, data []byte, n int) []byte {
	m := members(t, data)
	binary.LittleEndian.PutUint32(m[lengthOffset:], uint32(n))
	return m
}

func readAll(b []byte) ([]byte, error) {
	r, err := NewReader(bufio.NewReader(bytes.NewReader(b)))
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}

// reference is what compress/gzip, the reader rkt uses, reads from b.
func reference(b []byte) ([]byte, error) {
	zr, err := stdgzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	return io.ReadAll(zr)
}

func TestGunzip(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	part := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte('a' + rng.Intn(3))
		}
		return b
	}
	a, b, c := part(ChunkSize), part(5000), part(1)
	want := append(append(append([]byte{}, a...), b...), c...)
	ours := members(t, a, b, c)
	if memberLength(ours) == 0 {
		t.Fatal("our members do not announce their length")
	}
	tests := map[string][]byte{
		"ours":                       ours,
		"foreign, one member":        foreign(want),
		"foreign, several members":   foreign(a, b, c),
		"ours, then a foreign one":   append(members(t, a, b), foreign(c)...),
		"foreign, then ours ignored": append(foreign(a), members(t, b, c)...),
	}
	for name, in := range tests {
		got, err := readAll(in)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: %d bytes, %v; want %d bytes", name, len(got), err, len(want))
		}
		if std, err := reference(in); err != nil || !bytes.Equal(std, want) {
			t.Errorf("%s: compress/gzip reads something else: %v", name, err)
		}
	}
	damaged := bytes.Clone(ours)
	damaged[len(ours)/3] ^= 0x55
	if _, err := readAll(damaged); err == nil {
		t.Error("a damaged member was read without error")
	}
	if _, err := readAll(ours[:len(ours)-10]); err == nil {
		t.Error("a truncated stream was read without error")
	}
}

// A member's claimed length is proven or the read fails: the fast path
// never reads other bytes than compress/gzip reads.
func TestGunzipRefusesUnprovenClaims(t *testing.T) {
	hello, world := []byte("hello "), []byte("world")
	h := members(t, hello)
	w := members(t, world)
	big := make([]byte, ChunkSize+1)
	bigMember := members(t, big[:ChunkSize])
	// Re-compress ChunkSize+1 bytes into one member by hand: a Writer never
	// makes one, a hostile file can.
	var over bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&over, 6)
	zw.Header.Extra = memberExtra
	zw.Write(big)
	zw.Close()
	patchMemberLength(over.Bytes())
	for _, tc := range []struct {
		name, err string
		in        []byte
	}{
		{"claim covers a second member", "after the member's end (a hidden second member", append(claiming(t, hello, len(h)+len(w)), w...)},
		{"claim too short", "inflating", append(claiming(t, hello, len(h)-3), w...)},
		{"claim past the end of the file", "the file ends first (truncated)", claiming(t, hello, len(h)+100)},
		{"claim too large for any member", "claims a length of", claiming(t, hello, MaxMember+1)},
		{"claim too small to be a member", "claims a length of", claiming(t, hello, 20)},
		{"member inflating past a chunk", "inflates to more than", over.Bytes()},
		{"garbage after the last member", "gzip: invalid header", append(bytes.Clone(h), "garbage after the end"...)},
		{"a few bytes after the last member", "unexpected EOF", append(bytes.Clone(h), "junk"...)},
		{"zeros after the last member", "gzip: invalid header", append(bytes.Clone(h), make([]byte, 512)...)},
	} {
		got, err := readAll(tc.in)
		var me *MemberError
		if !errors.As(err, &me) || !bytes.Contains([]byte(err.Error()), []byte(tc.err)) {
			t.Errorf("%s: read %d bytes, %v; want a MemberError containing %q", tc.name, len(got), err, tc.err)
		}
	}
	if got, err := readAll(bigMember); err != nil || len(got) != ChunkSize {
		t.Errorf("a full chunk: %d bytes, %v", len(got), err)
	}
}

// A member that inflates to a gigabyte costs a chunk, not a gigabyte.
func TestMemberBombIsBounded(t *testing.T) {
	var bomb bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&bomb, 9)
	zw.Header.Extra = memberExtra
	zeros := make([]byte, 1<<20)
	for i := 0; i < 1024; i++ {
		zw.Write(zeros)
	}
	zw.Close()
	patchMemberLength(bomb.Bytes()) // ~1 MiB claiming its true length
	if bomb.Len() > MaxMember {
		t.Skipf("bomb of %d bytes is over the member cap already", bomb.Len())
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, err := readAll(bomb.Bytes())
	runtime.ReadMemStats(&after)
	if err == nil {
		t.Fatal("a member inflating to 1 GiB was read")
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 64<<20 {
		t.Errorf("reading the bomb allocated %d MiB", alloc>>20)
	}
}

// FuzzGunzipMatchesCompressGzip: for any bytes, our reader produces
// exactly what compress/gzip produces, or fails. It never produces bytes
// the standard reader does not, nor succeeds where it fails.
func FuzzGunzipMatchesCompressGzip(f *testing.F) {
	for _, s := range gunzipSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		got, err := readAll(in)
		if err != nil {
			return
		}
		want, stdErr := reference(in)
		if stdErr != nil {
			t.Fatalf("we read %d bytes where compress/gzip fails: %v", len(got), stdErr)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("we read %d bytes, compress/gzip reads %d other bytes", len(got), len(want))
		}
	})
}

// gunzipSeeds are real member sequences and the crafted ones the attacks
// use: claims covering a second member, too short, zero, huge;
// concatenations; truncations at every member boundary; garbage.
func gunzipSeeds(t testing.TB) [][]byte {
	a, b := []byte("manifest and rootfs"), bytes.Repeat([]byte("x"), 3000)
	ma, mb := members(t, a), members(t, b)
	both := append(bytes.Clone(ma), mb...)
	seeds := [][]byte{
		both,
		foreign(a, b),
		append(bytes.Clone(ma), foreign(b)...),
		append(foreign(a), mb...),
		append(claiming(t, a, len(ma)+len(mb)), mb...),
		append(claiming(t, a, len(ma)-1), mb...),
		claiming(t, a, 0),
		claiming(t, a, 1<<31),
		append(bytes.Clone(both), "trailing garbage"...),
		append(bytes.Clone(both), 0x1f, 0x8b),
		members(t, nil),
		{},
	}
	for i := 1; i < len(both); i += len(both) / 7 {
		seeds = append(seeds, both[:i])
	}
	return append(seeds, both[:len(ma)])
}

// TestWriteFuzzSeeds writes the seeds above into testdata/fuzz, where go
// test runs them: NIX2ACI_WRITE_SEEDS=1 go test -run TestWriteFuzzSeeds ./gzmember
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("NIX2ACI_WRITE_SEEDS") == "" {
		t.Skip("set NIX2ACI_WRITE_SEEDS=1 to rewrite testdata/fuzz")
	}
	writeSeeds(t, "FuzzGunzipMatchesCompressGzip", gunzipSeeds(t))
}

func writeSeeds(t *testing.T, target string, seeds [][]byte) {
	dir := filepath.Join("testdata", "fuzz", target)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, s := range seeds {
		body := "go test fuzz v1\n[]byte(" + strconv.Quote(string(s)) + ")\n"
		if err := os.WriteFile(filepath.Join(dir, "seed-"+strconv.Itoa(i)), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// bitWriter writes a deflate stream by hand: values least significant bit
// first, Huffman codes most significant bit first (RFC 1951, 3.1.1).
type bitWriter struct {
	out   []byte
	acc   uint32
	nbits uint
}

func (w *bitWriter) bits(v uint32, n uint) {
	for i := uint(0); i < n; i++ {
		w.acc |= (v >> i & 1) << w.nbits
		if w.nbits++; w.nbits == 8 {
			w.out, w.acc, w.nbits = append(w.out, byte(w.acc)), 0, 0
		}
	}
}

func (w *bitWriter) code(c uint32, n uint) {
	for i := n; i > 0; i-- {
		w.bits(c>>(i-1)&1, 1)
	}
}

// fixedLitLen writes symbol s in the fixed literal/length code.
func (w *bitWriter) fixedLitLen(s uint32) {
	switch {
	case s < 144:
		w.code(0x30+s, 8)
	case s < 256:
		w.code(0x190+s-144, 9)
	case s < 280:
		w.code(s-256, 7)
	default:
		w.code(0xc0+s-280, 8)
	}
}

func (w *bitWriter) flush() []byte {
	if w.nbits > 0 {
		w.out = append(w.out, byte(w.acc))
	}
	return w.out
}

// ourMember wraps a raw deflate stream in a Writer's header (claiming its
// true length) and a trailer for the bytes a lenient inflater makes of it.
func ourMember(deflate, inflated []byte) []byte {
	m := []byte{0x1f, 0x8b, 8, 0x04, 0, 0, 0, 0, 0, 0xff, 8, 0}
	m = append(m, memberExtra...)
	m = append(m, deflate...)
	m = binary.LittleEndian.AppendUint32(m, crc32.ChecksumIEEE(inflated))
	m = binary.LittleEndian.AppendUint32(m, uint32(len(inflated)))
	patchMemberLength(m)
	return m
}

// Symbols and codes RFC 1951 has no meaning for are refused, as
// compress/gzip refuses them, though some fast inflaters (libdeflate,
// which nix2aci once used here) read them as a length or distance: a
// member only such an inflater reads must not pass inspect or sign when
// rkt cannot read it.
func TestGunzipRefusesWhatOnlyLenientInflatersRead(t *testing.T) {
	// Distance symbol 30, which libdeflate reads as 24577 (+13 bits): a
	// stored block of 24577 bytes, then a fixed block copying 3 of them.
	const far = 24577
	head := bytes.Repeat([]byte("0123456789abcdef"), far/16+1)[:far]
	var w bitWriter
	w.bits(0, 1) // not the last block
	w.bits(0, 2) // stored
	w.flush()
	w = bitWriter{out: binary.LittleEndian.AppendUint16(binary.LittleEndian.AppendUint16(w.out, far), ^uint16(far))}
	w.out = append(w.out, head...)
	w.bits(1, 1) // last block
	w.bits(1, 2) // fixed codes
	w.fixedLitLen(257)
	w.code(30, 5)
	w.bits(0, 13)
	w.fixedLitLen(256)
	distance30 := ourMember(w.flush(), append(bytes.Clone(head), head[:3]...))

	// Length symbol 286, which libdeflate reads as 258.
	w = bitWriter{}
	w.bits(1, 1)
	w.bits(1, 2)
	w.fixedLitLen('x')
	w.fixedLitLen(286)
	w.code(0, 5) // distance 1
	w.fixedLitLen(256)
	length286 := ourMember(w.flush(), bytes.Repeat([]byte("x"), 259))

	for name, in := range map[string][]byte{"distance symbol 30": distance30, "length symbol 286": length286} {
		if _, err := reference(in); err == nil {
			t.Fatalf("%s: compress/gzip reads the crafted member; the test is wrong", name)
		}
		if got, err := readAll(in); err == nil {
			t.Errorf("%s: read %d bytes that compress/gzip refuses", name, len(got))
		}
	}
}
