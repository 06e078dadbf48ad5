package aci

import (
	"bufio"
	"bytes"
	stdgzip "compress/gzip"
	"io"
	"math/rand"
	"testing"
)

func members(t testing.TB, parts ...[]byte) []byte {
	var out bytes.Buffer
	z := compressor{cfg: config{compression: Gzip, level: DefaultLevel}}
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

func readAll(b []byte) ([]byte, error) {
	r, err := gunzip(bufio.NewReader(bytes.NewReader(b)))
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
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
		// The standard library reads the same bytes.
		zr, err := stdgzip.NewReader(bytes.NewReader(in))
		if err != nil {
			t.Fatal(err)
		}
		if std, _ := io.ReadAll(zr); !bytes.Equal(std, want) {
			t.Errorf("%s: compress/gzip reads something else", name)
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

func FuzzGunzip(f *testing.F) {
	f.Add(members(f, []byte("hello"), []byte("world")))
	f.Add(foreign([]byte("hello")))
	f.Fuzz(func(t *testing.T, in []byte) {
		got, err := readAll(in)
		if err != nil {
			return
		}
		zr, err := stdgzip.NewReader(bytes.NewReader(in))
		if err != nil {
			t.Fatalf("we read what compress/gzip cannot open: %v", err)
		}
		want, err := io.ReadAll(zr)
		if err == nil && !bytes.Equal(got, want) {
			t.Fatalf("got %q, compress/gzip reads %q", got, want)
		}
	})
}
