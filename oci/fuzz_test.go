package oci_test

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"sort"
	"testing"

	"github.com/nix2aci/nix2aci/oci"
)

// tarBytes is files as a tar file, in name order.
func tarBytes(files map[string]string) []byte {
	var names []string
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, n := range names {
		tw.WriteHeader(&tar.Header{Name: n, Mode: 0o644, Size: int64(len(files[n])), Typeflag: tar.TypeReg})
		tw.Write([]byte(files[n]))
	}
	tw.Close()
	return buf.Bytes()
}

// Whatever an oci-archive holds, ReadArchive returns an image whose
// manifest has the digest it reports, or an *InvalidError; it never
// panics.
func FuzzReadArchive(f *testing.F) {
	good, _ := layoutFiles("layer bytes", nil)
	f.Add(tarBytes(good))
	f.Add([]byte{})
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		tmp, err := os.CreateTemp(dir, "*.oci.tar")
		if err != nil {
			t.Fatal(err)
		}
		p := tmp.Name()
		defer os.Remove(p)
		_, err = tmp.Write(data)
		if cerr := tmp.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			t.Fatal(err)
		}
		c, err := oci.ReadArchive(p)
		if err != nil {
			if _, ok := err.(*oci.InvalidError); !ok {
				t.Fatalf("%T: %v", err, err)
			}
			return
		}
		sum := sha256.Sum256(c.Manifest)
		if d := "sha256:" + hex.EncodeToString(sum[:]); d != c.Digest {
			t.Fatalf("the manifest's digest is %s, not the %s reported", d, c.Digest)
		}
	})
}
