package aci

import (
	"archive/tar"
	"io"
	"path/filepath"

	"github.com/appc/spec/schema"
)

// ReadManifest reads an ACI's manifest from the start of r the way rkt
// does (appc's aci.ManifestFromImage): the archive is decompressed by the
// standard readers, one gzip member after another, and the manifest is the
// first tar entry whose cleaned name is "manifest". It reads no further
// than the end of that entry, so it proves nothing about the rest of the
// archive: Inspect does. The entry may be at most MaxManifestSize bytes
// (checked from its header), and when maxSize > 0 no more than maxSize
// uncompressed bytes are read looking for it. Errors are *InvalidError
// unless reading r failed.
func ReadManifest(r io.Reader, maxSize int64) (*schema.ImageManifest, error) {
	d, _, err := decompress(r, true)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	tr := tar.NewReader(limited(d, maxSize))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil, invalid("no manifest entry")
		}
		if err != nil {
			return nil, readError("reading tar", err, maxSize)
		}
		if filepath.Clean(hdr.Name) != "manifest" {
			continue
		}
		if hdr.Size > MaxManifestSize {
			return nil, invalid("the manifest is %d bytes, more than the %d an ACI's manifest may be", hdr.Size, MaxManifestSize)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			return nil, readError("reading manifest", err, maxSize)
		}
		var im schema.ImageManifest
		if err := im.UnmarshalJSON(data); err != nil {
			return nil, invalid("manifest: %v", err)
		}
		return &im, nil
	}
}
