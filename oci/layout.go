package oci

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/nix2aci/nix2aci/aci"
)

// The formats a build writes.
const (
	ACI           = "aci"            // an appc image (package aci)
	LayoutFormat  = "oci"            // an OCI image layout directory
	Archive       = "oci-archive"    // that directory as a tar file
	DockerArchive = "docker-archive" // docker save's tar file
)

// ParseFormat checks a format name a user gave.
func ParseFormat(s string) (string, error) {
	switch s {
	case ACI, LayoutFormat, Archive, DockerArchive:
		return s, nil
	}
	return "", fmt.Errorf("unknown format %q: use aci, oci, oci-archive or docker-archive", s)
}

// Extension is the ending of the file (or directory) of an image of
// format, in place of an ACI's ".aci".
func Extension(format string) string {
	switch format {
	case LayoutFormat:
		return ".oci"
	case Archive:
		return ".oci.tar"
	case DockerArchive:
		return ".docker.tar"
	}
	return ".aci"
}

// LayerMediaType is the media type of a layer compressed with c, or an
// error naming the compressions OCI has.
func LayerMediaType(c aci.Compression) (string, error) {
	switch c {
	case aci.Gzip:
		return ocispec.MediaTypeImageLayerGzip, nil
	case aci.None:
		return ocispec.MediaTypeImageLayer, nil
	}
	return "", fmt.Errorf("OCI layers are not compressed with %s: use --compression gzip or none", c)
}

// A Layer is a layer blob written into a layout.
type Layer struct {
	ocispec.Descriptor
	DiffID digest.Digest
}

// Layout is an OCI image layout directory being written.
type Layout struct {
	dir string
	mu  sync.Mutex
	// manifest and config are what WriteImage wrote, with the layers.
	manifest, config []byte
	layers           []Layer
	tag              string
}

// epoch is the mtime of every file of an archive.
var epoch = time.Unix(0, 0)

// Create makes dir an empty OCI image layout; dir must not exist.
func Create(dir string) (*Layout, error) {
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "blobs", "sha256"), 0o755); err != nil {
		return nil, err
	}
	data, err := json.Marshal(ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, ocispec.ImageLayoutFile), data, 0o644); err != nil {
		return nil, err
	}
	return &Layout{dir: dir}, nil
}

// Dir is the layout's directory.
func (l *Layout) Dir() string { return l.dir }

// blobPath is where the blob of d is.
func (l *Layout) blobPath(d digest.Digest) string {
	return filepath.Join(l.dir, "blobs", d.Algorithm().String(), d.Encoded())
}

// WriteLayer writes img as a layer blob (aci.Write with aci.AsLayer and
// opts, whose compression must be one OCI has) and returns its
// descriptor and what aci.Write said of it.
func (l *Layout) WriteLayer(ctx context.Context, img aci.Image, c aci.Compression, opts ...aci.Option) (Layer, *aci.Result, error) {
	mt, err := LayerMediaType(c)
	if err != nil {
		return Layer{}, nil, err
	}
	res, err := l.writeBlob(func(w io.Writer) (digest.Digest, int64, *aci.Result, error) {
		res, err := aci.Write(ctx, w, img, append(slices.Clip(opts), aci.AsLayer())...)
		if err != nil {
			return "", 0, nil, err
		}
		return digest.Digest(res.Digest), res.Size, res, nil
	})
	if err != nil {
		return Layer{}, nil, err
	}
	return Layer{Descriptor: ocispec.Descriptor{MediaType: mt, Digest: digest.Digest(res.Digest), Size: res.Size}, DiffID: digest.Digest(res.DiffID)}, res, nil
}

// writeBlob writes a blob through write, which says its digest and size,
// into a temporary file renamed to the digest once complete.
func (l *Layout) writeBlob(write func(io.Writer) (digest.Digest, int64, *aci.Result, error)) (*aci.Result, error) {
	tmp, err := os.CreateTemp(filepath.Join(l.dir, "blobs", "sha256"), ".tmp-*")
	if err != nil {
		return nil, err
	}
	d, size, res, err := write(tmp)
	if err == nil {
		err = tmp.Chmod(0o644)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		if err = d.Validate(); err == nil && d.Algorithm() != digest.SHA256 {
			err = fmt.Errorf("blob digest %s is not SHA-256", d)
		}
	}
	if err == nil {
		var fi os.FileInfo
		if fi, err = os.Stat(tmp.Name()); err == nil && fi.Size() != size {
			err = fmt.Errorf("blob %s: %d bytes written, %d said", d, fi.Size(), size)
		}
	}
	if err == nil {
		err = os.Rename(tmp.Name(), l.blobPath(d))
	}
	if err != nil {
		os.Remove(tmp.Name())
		return nil, err
	}
	return res, nil
}

// writeJSON writes v as a blob and returns its descriptor.
func (l *Layout) writeJSON(mediaType string, v any) (ocispec.Descriptor, []byte, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return ocispec.Descriptor{}, nil, err
	}
	d := digest.FromBytes(data)
	if err := os.WriteFile(l.blobPath(d), data, 0o644); err != nil {
		return ocispec.Descriptor{}, nil, err
	}
	return ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(data))}, data, nil
}

// Image says what WriteImage wrote.
type Image struct {
	Manifest ocispec.Descriptor // its digest names the image in a registry
	Config   ocispec.Descriptor // its digest is the image ID podman and docker show
	Tag      string
	// Size is the bytes of the layers, the config and the manifest.
	Size int64
}

// WriteImage completes the layout: config (cfg with the layers' DiffIDs),
// manifest (the layers bottom first), and index.json naming the manifest
// by refName (its org.opencontainers.image.ref.name): the tag alone for
// oci:DIR:TAG, or NAME:TAG, which podman load names the image of an
// oci-archive by.
func (l *Layout) WriteImage(cfg *ocispec.Image, layers []Layer, tag, refName string) (*Image, error) {
	return l.WriteAnnotatedImage(cfg, layers, tag, refName, nil)
}

// WriteAnnotatedImage is WriteImage with annotations on the manifest (a
// base image says there which store paths it holds).
func (l *Layout) WriteAnnotatedImage(cfg *ocispec.Image, layers []Layer, tag, refName string, annotations map[string]string) (*Image, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.manifest != nil {
		return nil, errors.New("the layout holds an image already")
	}
	c := *cfg
	c.RootFS.DiffIDs = make([]digest.Digest, len(layers))
	m := ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, Layers: make([]ocispec.Descriptor, len(layers)), Annotations: annotations}
	out := &Image{Tag: tag}
	for i, ly := range layers {
		c.RootFS.DiffIDs[i] = ly.DiffID
		m.Layers[i] = ly.Descriptor
		out.Size += ly.Size
	}
	var err error
	var cdata, mdata []byte
	if m.Config, cdata, err = l.writeJSON(ocispec.MediaTypeImageConfig, c); err != nil {
		return nil, err
	}
	if out.Manifest, mdata, err = l.writeJSON(ocispec.MediaTypeImageManifest, m); err != nil {
		return nil, err
	}
	plat := c.Platform
	out.Manifest.Platform = &plat
	out.Manifest.Annotations = map[string]string{ocispec.AnnotationRefName: refName}
	out.Config = m.Config
	out.Size += m.Config.Size + out.Manifest.Size
	idx := ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{out.Manifest}}
	data, err := json.Marshal(idx)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(l.dir, ocispec.ImageIndexFile), data, 0o644); err != nil {
		return nil, err
	}
	l.manifest, l.config, l.layers, l.tag = mdata, cdata, layers, tag
	return out, nil
}

// WriteArchive writes the layout as an oci-archive: a tar file of its
// directory, entries sorted, headers fixed.
func (l *Layout) WriteArchive(w io.Writer) error {
	tw := tar.NewWriter(w)
	ents := []string{ocispec.ImageIndexFile, ocispec.ImageLayoutFile, "blobs/", "blobs/sha256/"}
	blobs, err := os.ReadDir(filepath.Join(l.dir, "blobs", "sha256"))
	if err != nil {
		return err
	}
	for _, b := range blobs {
		if !strings.HasPrefix(b.Name(), ".") {
			ents = append(ents, "blobs/sha256/"+b.Name())
		}
	}
	slices.Sort(ents)
	for _, name := range ents {
		if strings.HasSuffix(name, "/") {
			if err := tw.WriteHeader(dirHeader(name)); err != nil {
				return err
			}
			continue
		}
		if err := copyFile(tw, name, filepath.Join(l.dir, filepath.FromSlash(name))); err != nil {
			return err
		}
	}
	return tw.Close()
}

// dockerManifest is one image of a docker-archive's manifest.json.
type dockerManifest struct {
	Config   string
	RepoTags []string
	Layers   []string
}

// WriteDockerArchive writes the image as a docker-archive (the tar file
// docker save writes and docker load and podman load read), its
// manifest.json naming it repoTag: the config as <digest>.json, each
// layer blob as it is in the layout as <digest>.tar.gz (or .tar,
// uncompressed).
func (l *Layout) WriteDockerArchive(w io.Writer, repoTag string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.manifest == nil {
		return errors.New("the layout holds no image yet")
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(l.manifest, &m); err != nil {
		return err
	}
	tw := tar.NewWriter(w)
	dm := dockerManifest{Config: m.Config.Digest.Encoded() + ".json", RepoTags: []string{repoTag}}
	if err := writeData(tw, dm.Config, l.config); err != nil {
		return err
	}
	for _, ly := range m.Layers {
		name := ly.Digest.Encoded() + ".tar"
		if ly.MediaType == ocispec.MediaTypeImageLayerGzip {
			name += ".gz"
		}
		if err := copyFile(tw, name, l.blobPath(ly.Digest)); err != nil {
			return err
		}
		dm.Layers = append(dm.Layers, name)
	}
	data, err := json.Marshal([]dockerManifest{dm})
	if err != nil {
		return err
	}
	if err := writeData(tw, "manifest.json", data); err != nil {
		return err
	}
	return tw.Close()
}

func dirHeader(name string) *tar.Header {
	return &tar.Header{Name: name, Typeflag: tar.TypeDir, Mode: 0o755, ModTime: epoch, Format: tar.FormatPAX}
}

func writeData(tw *tar.Writer, name string, data []byte) error {
	if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(data)), ModTime: epoch, Format: tar.FormatPAX}); err != nil {
		return err
	}
	_, err := tw.Write(data)
	return err
}

// copyFile writes the file src into the archive as name.
func copyFile(tw *tar.Writer, name, src string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", src)
	}
	if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: fi.Size(), ModTime: epoch, Format: tar.FormatPAX}); err != nil {
		return err
	}
	n, err := io.Copy(tw, io.LimitReader(f, fi.Size()))
	if err == nil && n != fi.Size() {
		err = io.ErrUnexpectedEOF
	}
	return err
}
