package push

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/nix2aci/nix2aci/internal/safeio"
	"github.com/nix2aci/nix2aci/ocisign"
)

// Options say where and how an image is pushed.
type Options struct {
	// Dest is the reference pushed to: HOST/NAME:TAG, with or without
	// docker:// before it. It must name a tag and no digest.
	Dest string
	// Insecure lets push speak plain HTTP, or HTTPS without checking the
	// certificate, to a registry that is not on this machine.
	Insecure bool
	// SigStore is the lookaside tree the signatures are written into
	// (the directory the registry's lookaside URL serves); empty: none
	// are written.
	SigStore string
	// Key, if set, signs the image as Dest; it needs SigStore.
	Key *openpgp.Entity
	// Creator is the signatures' optional.creator ("nix2aci 1.2").
	Creator string
	// SignaturesFrom are lookaside trees that may hold the image's
	// signatures already (a signing build's); without Key, those that
	// name Dest are published.
	SignaturesFrom []string
	// MountFrom is a repository on the same registry (HOST/NAME) that
	// may hold some of the layers, another app's on the same libraries:
	// the registry is asked to link those into Dest's repository rather
	// than have them sent again. A registry keeps a repository's blobs
	// apart from another's, so without it only blobs already in Dest's
	// own repository are skipped.
	MountFrom string
	// Keychain finds credentials for the registry (default: the docker
	// and podman configuration files).
	Keychain authn.Keychain
	// Transport is the HTTP transport (default: one of
	// http.DefaultTransport's settings).
	Transport http.RoundTripper
}

// Result says what Push did.
type Result struct {
	Reference string `json:"reference"` // the destination, normalised
	Digest    string `json:"digest"`    // the manifest's
	// Uploaded and Skipped are the blobs (config and layers) sent, and
	// those the registry had already, with their bytes.
	Uploaded      int   `json:"uploaded"`
	UploadedBytes int64 `json:"uploadedBytes"`
	Skipped       int   `json:"skipped"`
	SkippedBytes  int64 `json:"skippedBytes"`
	// Mounted are the skipped blobs linked from MountFrom's repository.
	Mounted int `json:"mounted"`
	// ManifestBytes is the manifest's size; it is always sent.
	ManifestBytes int64 `json:"manifestBytes"`
	// Signatures is how many signatures name the image as Reference in
	// SigStore; SignatureDir is where they are (empty without SigStore).
	Signatures   int    `json:"signatures"`
	SignatureDir string `json:"signatureDir,omitempty"`
	Signed       bool   `json:"signed"` // signed here, with Options.Key
}

// UsageError reports options that cannot work together, or a reference
// that cannot be pushed to.
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

// MissingSignatureError reports that no signature names the image as the
// destination, and none can be made without a key.
type MissingSignatureError struct{ Msg string }

func (e *MissingSignatureError) Error() string { return e.Msg }

// RegistryError reports a registry that could not be reached or refused
// the push.
type RegistryError struct {
	Registry string
	Err      error
}

func (e *RegistryError) Error() string {
	return fmt.Sprintf("pushing to %s: %v", e.Registry, e.Err)
}

func (e *RegistryError) Unwrap() error { return e.Err }

// ParseDest parses a destination reference: [docker://]HOST/NAME:TAG.
// The registry's host must be written out (Docker Hub as docker.io), so
// that a mistyped destination never goes to Docker Hub. The result is
// normalised as podman names it (and signatures do).
func ParseDest(dest string) (ocisign.Reference, error) {
	s := strings.TrimPrefix(dest, "docker://")
	if i := strings.Index(s, "://"); i >= 0 && i < 20 {
		return ocisign.Reference{}, &UsageError{Msg: fmt.Sprintf("push destination %s: push writes to a registry only: docker://HOST/NAME:TAG", safeio.QuoteAlways(dest))}
	}
	r, err := ocisign.ParseReference(s)
	if err != nil {
		return r, &UsageError{Msg: "push destination: " + err.Error()}
	}
	if host, _, ok := strings.Cut(s, "/"); !ok || host != "localhost" && !strings.ContainsAny(host, ".:") {
		return r, &UsageError{Msg: fmt.Sprintf("push destination %s names no registry: write it as docker://HOST/NAME:TAG (docker.io/%s for Docker Hub)", safeio.QuoteAlways(dest), r.Path+":"+r.Tag)}
	}
	if r.Digest != "" {
		return r, &UsageError{Msg: fmt.Sprintf("push destination %s names a digest; push to a tag (HOST/NAME:TAG): the image keeps its digest", safeio.QuoteAlways(dest))}
	}
	if r.Tag == "" {
		return r, &UsageError{Msg: fmt.Sprintf("push destination %s names no tag; push to HOST/NAME:TAG (signatures, and pulls, name a tag)", safeio.QuoteAlways(dest))}
	}
	return r, nil
}

// isLoopback reports whether host (with or without port) is this
// machine: localhost or a loopback address.
func isLoopback(host string) bool {
	h, _, err := net.SplitHostPort(host)
	if err != nil {
		h = host
	}
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(strings.Trim(h, "[]"))
	return ip != nil && ip.IsLoopback()
}

// Push uploads the image im to o.Dest (the blobs the repository lacks,
// then the manifest) and then writes its signatures into o.SigStore. The
// signatures to write are settled before anything is uploaded: with
// o.Key, a new signature naming o.Dest; without, those of o.SignaturesFrom
// and o.SigStore that name o.Dest, and if there are none while SigStore
// is set, Push uploads nothing and returns a *MissingSignatureError.
func Push(ctx context.Context, im *Image, o Options) (*Result, error) {
	dest, err := ParseDest(o.Dest)
	if err != nil {
		return nil, err
	}
	if o.Key != nil && o.SigStore == "" {
		return nil, &UsageError{Msg: "a key signs into a lookaside tree: name it with --sigstore DIR (the directory the registry's lookaside URL serves)"}
	}
	res := &Result{Reference: dest.String(), Digest: im.Digest, ManifestBytes: int64(len(im.manifest))}
	var sigs [][]byte
	if o.SigStore != "" {
		if sigs, err = settleSignatures(im, dest, o, res); err != nil {
			return nil, err
		}
	}

	opts := []name.Option{name.StrictValidation}
	if o.Insecure || isLoopback(dest.Domain) {
		opts = append(opts, name.Insecure)
	}
	ref, err := name.NewTag(dest.Name()+":"+dest.Tag, opts...)
	if err != nil {
		return nil, &UsageError{Msg: fmt.Sprintf("push destination %s: %v", dest, err)}
	}
	base := o.Transport
	if base == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		if o.Insecure {
			t.TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
		}
		base = t
	}
	rec := &recorder{base: base, allowHTTP: o.Insecure || isLoopback(dest.Domain), host: dest.Domain}
	kc := o.Keychain
	if kc == nil {
		kc = authn.DefaultKeychain
	}
	var img v1.Image
	if img, err = partial.CompressedToImage(im); err != nil {
		return nil, err
	}
	if o.MountFrom != "" {
		from, err := ParseDest(strings.TrimPrefix(o.MountFrom, "docker://") + ":" + dest.Tag)
		if err != nil || from.Domain != dest.Domain {
			return nil, &UsageError{Msg: fmt.Sprintf("--mount-from %s: name a repository on %s, as HOST/NAME", safeio.QuoteAlways(o.MountFrom), dest.Domain)}
		}
		fromRef, err := name.NewTag(from.Name()+":"+from.Tag, opts...)
		if err != nil {
			return nil, &UsageError{Msg: fmt.Sprintf("--mount-from %s: %v", safeio.QuoteAlways(o.MountFrom), err)}
		}
		img = mountImage{img, fromRef}
	}
	ropts := []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuthFromKeychain(kc),
		remote.WithTransport(rec),
		remote.WithUserAgent("nix2aci"),
		remote.WithRetryBackoff(remote.Backoff{Duration: 200 * time.Millisecond, Factor: 2, Steps: 3}),
	}
	if err := remote.Write(ref, img, ropts...); err != nil {
		return nil, registryError(ctx, dest, err)
	}
	// The tag names the very manifest pushed.
	desc, err := remote.Head(ref, ropts...)
	if err != nil {
		return nil, registryError(ctx, dest, err)
	}
	if desc.Digest.String() != im.Digest {
		return nil, &RegistryError{Registry: dest.Domain, Err: fmt.Errorf("%s names the manifest %s after the push, not the %s pushed: the registry changed it, or another push replaced it", dest, desc.Digest, im.Digest)}
	}
	for _, d := range im.Blobs {
		switch rec.outcome(d.Digest.String()) {
		case committed:
			res.Uploaded++
			res.UploadedBytes += d.Size
		case mounted:
			res.Mounted++
			fallthrough
		default:
			res.Skipped++
			res.SkippedBytes += d.Size
		}
	}
	if o.SigStore != "" {
		if err := ocisign.WriteLookaside(o.SigStore, dest.String(), im.Digest, sigs...); err != nil {
			return nil, fmt.Errorf("%s is in the registry, but its signatures are not published: %w", dest, err)
		}
		for _, s := range sigs {
			if c, err := ocisign.ReadClaim(s); err == nil && sameRef(c.Reference, dest) {
				res.Signatures++
			}
		}
		dir, _ := ocisign.LookasideDir(dest.Path, im.Digest)
		res.SignatureDir = dir
	}
	return res, nil
}

// registryError words err, from remote, for the user.
func registryError(ctx context.Context, dest ocisign.Reference, err error) error {
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	var le *LayoutError
	if errors.As(err, &le) {
		return le
	}
	var te *transport.Error
	if errors.As(err, &te) && (te.StatusCode == http.StatusUnauthorized || te.StatusCode == http.StatusForbidden) {
		return &RegistryError{Registry: dest.Domain, Err: fmt.Errorf("%w; log in with podman login %s (or docker login), whose credentials push reads", err, dest.Domain)}
	}
	if tlsTrouble(err) {
		return &RegistryError{Registry: dest.Domain, Err: fmt.Errorf("%w; if the registry serves plain HTTP, or HTTPS with a certificate this machine does not trust, push with --insecure", err)}
	}
	var ne *net.OpError
	if errors.As(err, &ne) {
		return &RegistryError{Registry: dest.Domain, Err: fmt.Errorf("no registry answers there: %w", err)}
	}
	return &RegistryError{Registry: dest.Domain, Err: err}
}

// tlsTrouble reports whether err is a registry not speaking HTTPS, or
// not with a certificate this machine trusts.
func tlsTrouble(err error) bool {
	var (
		rh tls.RecordHeaderError
		cv *tls.CertificateVerificationError
		ua x509.UnknownAuthorityError
		hn x509.HostnameError
		ci x509.CertificateInvalidError
	)
	return errors.As(err, &rh) || errors.As(err, &cv) || errors.As(err, &ua) || errors.As(err, &hn) || errors.As(err, &ci) ||
		strings.Contains(err.Error(), "server gave HTTP response to HTTPS client")
}

// recorder is the transport under go-containerregistry's: it refuses
// plain HTTP where it is not allowed, and notes which blobs the registry
// committed (a PUT with ?digest= answered 201) or mounted (a POST with
// ?mount= answered 201).
type recorder struct {
	base      http.RoundTripper
	allowHTTP bool
	host      string
	mu        sync.Mutex
	blobs     map[string]blobOutcome
}

type blobOutcome int

const (
	present blobOutcome = iota
	committed
	mounted
)

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme == "http" && !r.allowHTTP {
		return nil, fmt.Errorf("not speaking plain HTTP to %s, which is not on this machine; it answers no HTTPS push trusts: if it serves only HTTP, or HTTPS with a certificate this machine does not trust, push with --insecure", r.host)
	}
	resp, err := r.base.RoundTrip(req)
	if err != nil || resp.StatusCode != http.StatusCreated || !strings.Contains(req.URL.Path, "/blobs/uploads/") {
		return resp, err
	}
	q := req.URL.Query()
	switch {
	case req.Method == http.MethodPut && q.Get("digest") != "":
		r.note(q.Get("digest"), committed)
	case req.Method == http.MethodPost && q.Get("mount") != "":
		r.note(q.Get("mount"), mounted)
	}
	return resp, err
}

func (r *recorder) note(digest string, o blobOutcome) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.blobs == nil {
		r.blobs = map[string]blobOutcome{}
	}
	r.blobs[digest] = o
}

func (r *recorder) outcome(digest string) blobOutcome {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.blobs[digest]
}

// mountImage is an image whose layers the registry may mount from
// another repository.
type mountImage struct {
	v1.Image
	from name.Reference
}

func (m mountImage) Layers() ([]v1.Layer, error) {
	ls, err := m.Image.Layers()
	if err != nil {
		return nil, err
	}
	out := make([]v1.Layer, len(ls))
	for i, l := range ls {
		out[i] = &remote.MountableLayer{Layer: l, Reference: m.from}
	}
	return out, nil
}

// sameRef reports whether the identity s, as a signature claims it, is
// dest.
func sameRef(s string, dest ocisign.Reference) bool {
	r, err := ocisign.ParseReference(s)
	return err == nil && r.String() == dest.String()
}
