package pipeline

import (
	"context"
	"errors"
	"time"

	"github.com/nix2aci/nix2aci/aci"
	"github.com/nix2aci/nix2aci/fetch"
	"github.com/nix2aci/nix2aci/manifest"
)

// Kinds of image.
const (
	Fat     = "fat"
	Thin    = "thin"
	Layered = "layered"
)

// Request is one build.
type Request struct {
	// Target is a recipe name, a nixpkgs attribute, a store path (or a
	// link to one) or a .nix file (see pkgs.Resolve).
	Target string
	// Kind is Fat (the default), Thin or Layered.
	Kind string
	// Format is what is written: oci.ACI (the default), or an OCI image
	// as oci.LayoutFormat, oci.Archive or oci.DockerArchive (see oci.go).
	Format string
	// MaxLayers is the layer budget of a Layered build (0:
	// DefaultMaxLayers); LayerPrefix names its layers (empty:
	// DefaultLayerPrefix of the app's name).
	MaxLayers   int
	LayerPrefix string
	// OutDir is where the files go ("ACIs" when empty).
	OutDir string
	// Name overrides the recipe's image name; it must be an AC Identifier.
	Name string
	// Overrides set manifest fields over the recipe's (exec, user,
	// environment, labels, annotations, ports, mount points).
	Overrides manifest.Overrides
	// Recipes is a directory of recipes overriding the built-in ones.
	Recipes string
	// Flakes lets the target's recipe call builtins.getFlake (it enables
	// the experimental features flakes need for the evaluation).
	Flakes bool
	// Compression is gzip when empty.
	Compression aci.Compression
	Level, Jobs int
	// CacheDir is the cache of compressed store paths ("" for none);
	// CacheMax, when > 0, is the size it is trimmed to afterwards.
	CacheDir string
	CacheMax int64
	// CacheKey is the file of the key that tags cache entries: a warm
	// build takes only members whose tags verify (see fragcache.Cache). It is
	// created when missing. "" for none: the cache is then not used.
	CacheKey string
	// CacheKeyValue is the key itself (fragcache.CacheKeySize bytes, e.g. from
	// a CI secret), used instead of CacheKey's file and written nowhere.
	CacheKeyValue []byte
	// GroupOnly, when set, writes no app: only the layer group image of
	// that name holding the target's closure less the base's, the image
	// a recipe's layer group of that name on that base makes (a base
	// built once, e.g. by lib.buildLayer, for many apps).
	GroupOnly string
	// Describe, with GroupOnly, also writes a Description of the image
	// into the output directory under this name (DescriptionFile for
	// buildLayer).
	Describe string
	// GroupPackages are more store paths the group holds the closure of,
	// beside the target's (GroupOnly only).
	GroupPackages []string
	// Base is the file of a published base image to build the app on
	// (see LoadBase): the app depends on it by image ID and holds none of
	// the store paths it holds. The base and the images it depends on
	// (found beside it) are linked into the output directory and listed
	// in the .deps file.
	Base string
	// BaseFetch says how a Base given as an image name
	// (NAME:VERSION[,LABEL=VALUE…], as rkt writes it) is fetched: by appc
	// discovery, its signature verified against BaseFetch.Trust (see
	// fetch.Image; Dir is the build's own). A Base that names an existing
	// file or directory is read from there.
	BaseFetch fetch.Options
	// NoExecCheck builds even if the app's program cannot start.
	NoExecCheck bool
	// Created is the app image's "created" time (zero: the Unix epoch).
	Created time.Time
	// ClosureGraphs, when set, are the closure of the target as Nix's
	// exportReferencesGraph writes it, for builds inside a Nix derivation
	// (see buildACI in nix/build-aci.nix), where there is no nix-store to
	// ask: the target must then be a store path, nothing is realised, no
	// GC root is made and no cache is used.
	ClosureGraphs []string
	// NoGCRoots registers no GC roots beside the images: for a caller
	// that keeps nothing of them past the build (nix2aci serve publishes
	// the images and removes the app's files). The build's own roots in
	// its staging directory hold its packages while it runs.
	NoGCRoots bool
	// LayerReferencesFirst, for a layered build, gives each store path the
	// target's packages refer to directly a layer of its own before the
	// most popular paths, the layer budget permitting. nix2aci serve's
	// target is one environment joining the packages asked for: this way
	// each of them is a layer of its own, and a new version of one changes
	// that layer only, not the layer of the paths left over.
	LayerReferencesFirst bool
	// ReuseBlobs, for an OCI build, is a blob store whose layers the
	// build links into its layout instead of writing them (ocireuse.go).
	ReuseBlobs *BlobReuse
	// Signer, if set, signs every image written.
	Signer *Signer
	// SignOCI, if set, signs an OCI build's image before it is moved into
	// place: it gets the image as staged (a layout directory or an
	// archive) and what the build made. An error fails the build, and the
	// output directory stays as it was.
	SignOCI func(ctx context.Context, staged string, out *Result) error
	// Progress, if set, is told how writing each file goes.
	Progress func(file string, p aci.Progress)
	// Warn, if set, is told what the build noticed but went on with.
	Warn func(msg string)
}

// Image is one image file a build wrote (or reused).
type Image struct {
	ACI        string `json:"aci,omitempty"`
	Signature  string `json:"signature,omitempty"`
	Name       string `json:"name"`
	Version    string `json:"version"`
	ImageID    string `json:"imageID"`
	StorePaths int    `json:"storePaths"`
	Size       int64  `json:"size"`
	// Reused says the file was already there, written by an earlier build.
	Reused bool `json:"reused,omitempty"`
	// Digest is an OCI layer's blob digest (ImageID is then its DiffID).
	Digest string `json:"digest,omitempty"`
}

// Result is what a build wrote.
type Result struct {
	ACI string `json:"aci,omitempty"`
	// Format is the request's; OCI is the path of an OCI build's image
	// layout or archive, Digest its manifest's digest, Tag its tag, and
	// PodmanArgs the .podman-args of a thin one. ImageID is then the
	// config's digest, the image ID podman and docker show.
	Format      string         `json:"format"`
	OCI         string         `json:"oci,omitempty"`
	Digest      string         `json:"digest,omitempty"`
	Tag         string         `json:"tag,omitempty"`
	PodmanArgs  string         `json:"podmanArgs,omitempty"`
	RktArgs     string         `json:"rktArgs,omitempty"`
	Deps        string         `json:"deps,omitempty"`
	Signature   string         `json:"signature,omitempty"`
	GCRoots     []string       `json:"gcRoots"`
	Name        string         `json:"name"`
	Version     string         `json:"version"`
	OS          string         `json:"os"`
	Arch        string         `json:"arch"`
	Kind        string         `json:"kind"`
	ImageID     string         `json:"imageID"`
	StorePaths  int            `json:"storePaths"`
	CachedPaths int            `json:"cachedPaths"`
	Size        int64          `json:"size"`
	Offline     bool           `json:"offline"`
	Conflicts   []aci.Conflict `json:"conflicts,omitempty"`
	// Layers are a layered image's dependencies, in rendering order.
	Layers []Image `json:"layers,omitempty"`
	// Base are the files of the base and the images below it, in
	// rendering order (listed in .deps before the layers).
	Base []string `json:"base,omitempty"`
	// blobs are the layers RecordBlobs records (ocireuse.go).
	blobs *blobRecords
}

// UsageError is a request that cannot be built as asked.
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

// IsUsage reports whether err is a request that cannot be built as asked.
func IsUsage(err error) bool {
	var u *UsageError
	return errors.As(err, &u)
}
