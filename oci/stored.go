package oci

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nix2aci/nix2aci/aci"
	"github.com/nix2aci/nix2aci/internal/safeio"
)

// Bounds on what ReadStored reads: every file of a layout is input.
const (
	maxStoredIndex    = 1 << 20
	maxStoredManifest = 16 << 20 // a base's store paths annotation can be long
	maxStoredConfig   = 4 << 20
	maxStoredLayers   = 1000
)

// Stored is the one image of an image layout directory, as ReadStored
// found it: its manifest and config are read and checked against their
// digests; its layer blobs are only looked at (present, regular, of the
// size the manifest says), never read, so that an app can be built on it
// without reading its bytes. A client that reads them later (skopeo,
// podman) checks them against their digests.
type Stored struct {
	Dir         string
	Manifest    ocispec.Descriptor
	Annotations map[string]string // the manifest's
	Config      ocispec.Image
	ConfigDesc  ocispec.Descriptor
	Layers      []Layer
}

// ReadStored reads the image of the layout directory dir, which must hold
// exactly one.
func ReadStored(dir string) (*Stored, error) {
	data, err := safeio.ReadFile(filepath.Join(dir, ocispec.ImageLayoutFile), 4096)
	if err != nil {
		return nil, fmt.Errorf("not an OCI image layout: %w", err)
	}
	var lay ocispec.ImageLayout
	if err := json.Unmarshal(data, &lay); err != nil || lay.Version != ocispec.ImageLayoutVersion {
		return nil, fmt.Errorf("its %s is not an OCI image layout version %s", ocispec.ImageLayoutFile, ocispec.ImageLayoutVersion)
	}
	data, err = safeio.ReadFile(filepath.Join(dir, ocispec.ImageIndexFile), maxStoredIndex)
	if err != nil {
		return nil, err
	}
	var idx ocispec.Index
	if err := json.Unmarshal(data, &idx); err != nil {
		return nil, fmt.Errorf("its %s: %w", ocispec.ImageIndexFile, err)
	}
	if len(idx.Manifests) != 1 {
		return nil, fmt.Errorf("it holds %d images, not one: give the layout of one image, as nix2aci build writes", len(idx.Manifests))
	}
	s := &Stored{Dir: dir, Manifest: idx.Manifests[0]}
	if s.Manifest.MediaType != ocispec.MediaTypeImageManifest {
		return nil, fmt.Errorf("its image is a %s, not an image manifest", safeio.Quote(s.Manifest.MediaType))
	}
	data, err = readBlob(dir, s.Manifest, maxStoredManifest)
	if err != nil {
		return nil, fmt.Errorf("its manifest: %w", err)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("its manifest: %w", err)
	}
	if m.SchemaVersion != 2 || m.Config.MediaType != ocispec.MediaTypeImageConfig {
		return nil, errors.New("its manifest is not an OCI image manifest (schema 2, an image config)")
	}
	s.Annotations, s.ConfigDesc = m.Annotations, m.Config
	if data, err = readBlob(dir, m.Config, maxStoredConfig); err != nil {
		return nil, fmt.Errorf("its config: %w", err)
	}
	if err := json.Unmarshal(data, &s.Config); err != nil {
		return nil, fmt.Errorf("its config: %w", err)
	}
	diffIDs := s.Config.RootFS.DiffIDs
	if s.Config.RootFS.Type != "layers" || len(diffIDs) != len(m.Layers) {
		return nil, fmt.Errorf("its config lists %d layers, its manifest %d", len(diffIDs), len(m.Layers))
	}
	if len(m.Layers) > maxStoredLayers {
		return nil, fmt.Errorf("it has %d layers, more than %d", len(m.Layers), maxStoredLayers)
	}
	for i, d := range m.Layers {
		if d.MediaType != ocispec.MediaTypeImageLayerGzip && d.MediaType != ocispec.MediaTypeImageLayer {
			return nil, fmt.Errorf("its layer %d is a %s, not a tar or gzip layer", i+1, safeio.Quote(d.MediaType))
		}
		if err := checkDigest(d.Digest); err != nil {
			return nil, fmt.Errorf("its layer %d: %w", i+1, err)
		}
		if err := checkDigest(diffIDs[i]); err != nil {
			return nil, fmt.Errorf("its layer %d's DiffID: %w", i+1, err)
		}
		fi, err := os.Lstat(blobPath(dir, d.Digest))
		if err != nil {
			return nil, fmt.Errorf("its layer %s: %w", d.Digest, err)
		}
		if !fi.Mode().IsRegular() || fi.Size() != d.Size {
			return nil, fmt.Errorf("its layer %s is not a file of %d bytes", d.Digest, d.Size)
		}
		s.Layers = append(s.Layers, Layer{Descriptor: ocispec.Descriptor{MediaType: d.MediaType, Digest: d.Digest, Size: d.Size}, DiffID: diffIDs[i]})
	}
	return s, nil
}

// checkDigest accepts a well-formed SHA-256 digest only: blobs are named
// by it, so nothing else may reach a path.
func checkDigest(d digest.Digest) error {
	if err := d.Validate(); err != nil {
		return err
	}
	if d.Algorithm() != digest.SHA256 {
		return fmt.Errorf("digest %s is not SHA-256", safeio.Quote(d.String()))
	}
	return nil
}

func blobPath(dir string, d digest.Digest) string {
	return filepath.Join(dir, "blobs", d.Algorithm().String(), d.Encoded())
}

// readBlob reads the blob d of the layout dir, of at most max bytes, and
// checks it is the one d names.
func readBlob(dir string, d ocispec.Descriptor, max int64) ([]byte, error) {
	if err := checkDigest(d.Digest); err != nil {
		return nil, err
	}
	if d.Size < 0 || d.Size > max {
		return nil, fmt.Errorf("a blob of %d bytes: at most %d are read", d.Size, max)
	}
	data, err := safeio.ReadFile(blobPath(dir, d.Digest), d.Size)
	if err != nil {
		return nil, err
	}
	if int64(len(data)) != d.Size || digest.FromBytes(data) != d.Digest {
		return nil, fmt.Errorf("the blob %s does not have that digest and size", d.Digest)
	}
	return data, nil
}

// LinkLayer puts the layer blob ly of the layout src into this layout,
// hard-linked (copied across file systems), without reading it when a
// link can be made; a blob of that digest already here is kept.
func (l *Layout) LinkLayer(src *Stored, ly Layer) error {
	if err := checkDigest(ly.Digest); err != nil {
		return err
	}
	from, to := blobPath(src.Dir, ly.Digest), l.blobPath(ly.Digest)
	if _, err := os.Lstat(to); err == nil {
		return nil
	}
	if err := os.Link(from, to); err == nil {
		return nil
	}
	in, err := safeio.OpenRegular(from)
	if err != nil {
		return err
	}
	defer in.Close()
	_, err = l.writeBlob(func(w io.Writer) (digest.Digest, int64, *aci.Result, error) {
		// Read anyway: checked as it is copied.
		dg := digest.SHA256.Digester()
		n, err := io.Copy(io.MultiWriter(w, dg.Hash()), io.LimitReader(in, ly.Size+1))
		if err == nil && (n != ly.Size || dg.Digest() != ly.Digest) {
			err = fmt.Errorf("the blob %s of %s does not have that digest and size", ly.Digest, safeio.Quote(src.Dir))
		}
		return ly.Digest, n, nil, err
	})
	return err
}
