package aci

import (
	"bytes"
	stdgzip "compress/gzip"
	"encoding/binary"
	"io"
	"testing"

	"github.com/klauspost/compress/gzip"

	"github.com/nix2aci/nix2aci/gzmember"
)

// claiming returns data as one gzip member in the format of gzmember's
// Writer (FEXTRA with an "N2" subfield holding the member's length),
// whose length field claims n bytes instead of its own.
func claiming(t testing.TB, data []byte, n int) []byte {
	t.Helper()
	var out bytes.Buffer
	zw, err := gzip.NewWriterLevel(&out, gzmember.DefaultLevel)
	if err != nil {
		t.Fatal(err)
	}
	zw.Header.Extra = []byte{'N', '2', 4, 0, 0, 0, 0, 0}
	zw.Write(data)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	m := out.Bytes()
	binary.LittleEndian.PutUint32(m[16:], uint32(n)) // after the header, XLEN and the subfield's header
	return m
}

// members returns each part as one member that claims its true length.
func members(t testing.TB, parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		m := claiming(t, p, 0)
		binary.LittleEndian.PutUint32(m[16:], uint32(len(m)))
		out = append(out, m...)
	}
	return out
}

// reference is what compress/gzip, the reader rkt uses, reads from b.
func reference(b []byte) ([]byte, error) {
	zr, err := stdgzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	return io.ReadAll(zr)
}

// memberSeeds are member sequences and the crafted claims the attacks on
// the length field use, for the fuzz targets of the readers here.
func memberSeeds(t testing.TB) [][]byte {
	a, b := []byte("manifest and rootfs"), bytes.Repeat([]byte("x"), 3000)
	ma, mb := members(t, a), members(t, b)
	both := append(bytes.Clone(ma), mb...)
	return [][]byte{
		both,
		append(claiming(t, a, len(ma)+len(mb)), mb...),
		append(claiming(t, a, len(ma)-1), mb...),
		claiming(t, a, 1<<31),
		append(bytes.Clone(both), "trailing garbage"...),
		both[:len(both)/2],
		members(t, nil),
	}
}

// The attack that made this necessary: member A claims its own length
// plus B's. compress/gzip (and rkt) read A, B, C; a reader trusting the
// claim reads A, C. With B an evil image and C the reviewed one, verify
// would judge one image and rkt would run another.
func TestHiddenMemberCannotSwapTheImage(t *testing.T) {
	good := tarACI(t, "good.example/reviewed")
	evil := tarACI(t, "evil.example/app")
	a := members(t, nil)
	b := members(t, evil)
	file := append(append(claiming(t, nil, len(a)+len(b)), b...), members(t, good)...)
	std, err := reference(file)
	if err != nil || !bytes.HasPrefix(std, evil) {
		t.Fatalf("compress/gzip should read the evil image first: %v", err)
	}
	if _, err := Inspect(bytes.NewReader(file)); err == nil {
		t.Fatal("Inspect read an image whose members hide one from it")
	} else if !IsInvalid(err) {
		t.Errorf("not an InvalidError: %v", err)
	}
}
