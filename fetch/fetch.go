package fetch

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/appc/spec/discovery"
	"github.com/appc/spec/schema"
	"github.com/appc/spec/schema/types"

	"github.com/nix2aci/nix2aci/internal/safeio"
	"github.com/nix2aci/nix2aci/manifest"
	"github.com/nix2aci/nix2aci/sign"
)

const (
	// DefaultMaxSize caps an image file, and its uncompressed tar, when
	// Options.MaxSize is 0.
	DefaultMaxSize = 8 << 30
	// DefaultStallTimeout is how long a server may send nothing.
	DefaultStallTimeout = time.Minute
	// maxSignature bounds a signature file, as package sign does.
	maxSignature = 1 << 20
)

// Options say where the image goes and how it may be fetched.
type Options struct {
	// Dir is where the image and its signature go; it must exist.
	Dir string
	// Trust holds the keys trusted for names (sign.LoadTrustDir reads
	// rkt's trust store). Nil refuses every image: no unsigned bases.
	Trust *sign.Trust
	// InsecureHTTP allows plain http for discovery and downloads (rkt's
	// --insecure-options=http; for tests and closed networks). TLS is
	// never skipped.
	InsecureHTTP bool
	// MaxSize caps the image file and its uncompressed tar (0:
	// DefaultMaxSize).
	MaxSize int64
	// Client sends the requests (nil: one with bounded dials and TLS
	// handshakes and no proxy). Its CheckRedirect is replaced by the
	// package's redirect policy.
	Client *http.Client
	// Port, when not 0, is the port discovery asks (https://HOST:PORT/…),
	// as appc's discovery allows; for tests.
	Port uint
	// StallTimeout fails a request that receives nothing for this long
	// (0: DefaultStallTimeout).
	StallTimeout time.Duration
	// Now is the time keys must be valid at (zero: the current time).
	Now time.Time
}

// Fetched is an image Image fetched and proved.
type Fetched struct {
	// ACI and Signature are the files in Dir.
	ACI, Signature string
	// Manifest is the image's, checked.
	Manifest *schema.ImageManifest
	ImageID  string
	// Signer is the fingerprint of the key that signed it, TrustedAs
	// "root" or the prefix it is trusted for.
	Signer, TrustedAs string
	// URL and SignatureURL are where discovery said they were.
	URL, SignatureURL string
}

// UsageError is a request that cannot be made as asked.
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

// DiscoveryError says discovery found no image for the name and labels.
type DiscoveryError struct {
	Name string
	Msg  string
}

func (e *DiscoveryError) Error() string { return e.Msg }

// DownloadError is a request that failed: no answer, an answer other
// than 200 OK (Status), a stall or a refused redirect (Err).
type DownloadError struct {
	URL    string
	Status int
	Err    error
	Hint   string
}

func (e *DownloadError) Error() string {
	msg := "fetching " + safeio.Quote(e.URL) + ": "
	if e.Err != nil {
		msg += safeio.Quote(e.Err.Error())
	} else {
		msg += fmt.Sprintf("the server answered %d %s", e.Status, http.StatusText(e.Status))
	}
	if e.Hint != "" {
		msg += "; " + e.Hint
	}
	return msg
}

func (e *DownloadError) Unwrap() error { return e.Err }

// TooLargeError is a file larger than it may be.
type TooLargeError struct {
	URL, What string
	Max       int64
}

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("%s at %s is larger than the %d bytes allowed (raise the limit only for a server you trust not to fill the disk)", e.What, safeio.Quote(e.URL), e.Max)
}

// MismatchError is a signed, trusted, valid image that is not the one
// asked for: another name, or another value of a label asked for.
type MismatchError struct {
	URL string
	// Field is "name" or the label's name.
	Field, Want, Got string
}

func (e *MismatchError) Error() string {
	if e.Field == "name" {
		return fmt.Sprintf("%s holds the image %s, not %s: the site serves another image under this name; publish the right one there, or ask for the name it holds", safeio.Quote(e.URL), safeio.Quote(e.Got), e.Want)
	}
	got := safeio.Quote(e.Got)
	if e.Got == "" {
		got = "none"
	}
	return fmt.Sprintf("%s holds an image whose %s label is %s, not %s as asked: the site serves another image under these labels; ask for the %s it holds, or publish the right image there", safeio.Quote(e.URL), e.Field, got, safeio.Quote(e.Want), e.Field)
}

// Image resolves name and labels by appc discovery, downloads the image
// and its signature into o.Dir under temporary names, verifies them
// against o.Trust, checks that the image is the one asked for, and only
// then renames them into place: DIR/<manifest.FlatFileName> and .asc.
// See the package doc for the rules.
func Image(ctx context.Context, name string, labels map[string]string, o Options) (*Fetched, error) {
	if o.Trust == nil {
		return nil, &UsageError{"no trust store: a base image must be signed by a key trusted for its name; give the trust store (rkt's /etc/rkt/trustedkeys, or one filled with nix2aci trust --prefix PREFIX KEY.asc --trust-dir DIR)"}
	}
	if err := manifest.CheckIdentifier(name); err != nil {
		return nil, &UsageError{fmt.Sprintf("base image name: %v", err)}
	}
	appLabels := map[types.ACIdentifier]string{}
	for k, v := range labels {
		if !types.ValidACIdentifier.MatchString(k) {
			return nil, &UsageError{fmt.Sprintf("label name %s is not an AC Identifier", safeio.QuoteAlways(k))}
		}
		// A value goes into the URL template as it is (and {…} would be
		// a template variable): it may not change the URL's shape.
		if v == "" || strings.ContainsAny(v, "/?#{}") || strings.IndexFunc(v, isControl) >= 0 {
			return nil, &UsageError{fmt.Sprintf("label %s=%s cannot be asked for: it must be non-empty, without /, ?, #, {, } or control characters", k, safeio.QuoteAlways(v))}
		}
		appLabels[types.ACIdentifier(k)] = v
	}
	app, err := discovery.NewApp(name, appLabels)
	if err != nil {
		return nil, &UsageError{fmt.Sprintf("base image %s: %v", name, err)}
	}
	maxSize := o.MaxSize
	if maxSize <= 0 {
		maxSize = DefaultMaxSize
	}
	if fi, err := os.Stat(o.Dir); err != nil || !fi.IsDir() {
		return nil, &UsageError{fmt.Sprintf("%s is not a directory to fetch into", safeio.Quote(o.Dir))}
	}
	root, err := os.OpenRoot(o.Dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()

	c := newCall(ctx, o)
	eps, err := discover(c, app, o.Port)
	if err != nil {
		return nil, err
	}
	aciURL, err := c.checkURL(eps[0].ACI)
	if err != nil {
		return nil, &DiscoveryError{Name: name, Msg: fmt.Sprintf("discovery of %s: the image's URL: %v", describe(name, labels), err)}
	}
	ascURL, err := c.checkURL(eps[0].ASC)
	if err != nil {
		return nil, &DiscoveryError{Name: name, Msg: fmt.Sprintf("discovery of %s: the signature's URL: %v", describe(name, labels), err)}
	}

	// The signature first: without one, the image is not downloaded.
	var sig bytes.Buffer
	if err := c.download(ascURL, maxSignature, "the signature", &sig); err != nil {
		return nil, interrupted(ctx, name, missing(c, err, name, labels, aciURL, ascURL))
	}

	// As rkt does, the signature is judged before the image is
	// downloaded, against no image: if no packet in it is by a signing
	// key of the trust store (or none can be read), no image can change
	// that. Every other verdict needs the image's bytes.
	if _, err := sign.VerifyWith(strings.NewReader(""), bytes.NewReader(sig.Bytes()), o.Trust, sign.VerifyOptions{Now: o.Now, Full: true}); err != nil {
		var ve *sign.VerifyError
		if errors.As(err, &ve) && (ve.Reason == sign.ReasonUnknownKey || ve.Reason == sign.ReasonMalformed) {
			return nil, verifyFailed(err, name, aciURL.Redacted())
		}
	}

	// Both files under temporary names, removed on any failure.
	tmp := ".nix2aci-fetch-" + randomHex()
	tmpACI, tmpASC := tmp+".aci", tmp+".aci.asc"
	done := false
	defer func() {
		if !done {
			root.Remove(tmpACI)
			root.Remove(tmpASC)
		}
	}()
	f, err := root.OpenFile(tmpACI, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, fmt.Errorf("writing into %s: %w", safeio.Quote(o.Dir), err)
	}
	defer f.Close()
	if err := c.download(aciURL, maxSize, "the image", f); err != nil {
		return nil, interrupted(ctx, name, err)
	}
	if err := f.Sync(); err != nil {
		return nil, fmt.Errorf("writing into %s: %w", safeio.Quote(o.Dir), err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}

	v, err := sign.VerifyWith(safeio.WithContext(ctx, f), bytes.NewReader(sig.Bytes()), o.Trust, sign.VerifyOptions{Now: o.Now, Full: true, MaxImageSize: maxSize})
	if ctx.Err() != nil {
		return nil, fmt.Errorf("fetching %s interrupted: %w", name, context.Cause(ctx))
	}
	if err != nil {
		return nil, verifyFailed(err, name, aciURL.Redacted())
	}
	if got := v.Manifest.Name.String(); got != name {
		return nil, &MismatchError{URL: aciURL.Redacted(), Field: "name", Want: name, Got: got}
	}
	for _, k := range sortedKeys(labels) {
		if got, _ := v.Manifest.Labels.Get(k); got != labels[k] {
			return nil, &MismatchError{URL: aciURL.Redacted(), Field: k, Want: labels[k], Got: got}
		}
	}
	flat, err := manifest.FlatFileName(v.Manifest)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", safeio.Quote(aciURL.Redacted()), err)
	}

	if err := writeFile(root, tmpASC, sig.Bytes()); err != nil {
		return nil, fmt.Errorf("writing into %s: %w", safeio.Quote(o.Dir), err)
	}
	if err := root.Rename(tmpACI, flat); err != nil {
		return nil, fmt.Errorf("writing into %s: %w", safeio.Quote(o.Dir), err)
	}
	if err := root.Rename(tmpASC, flat+".asc"); err != nil {
		// An image without its signature is not left: it is removed
		// (and with it whatever file of that name was there before).
		root.Remove(flat)
		return nil, fmt.Errorf("writing into %s: %w", safeio.Quote(o.Dir), err)
	}
	done = true
	return &Fetched{
		ACI: filepath.Join(o.Dir, flat), Signature: filepath.Join(o.Dir, flat+".asc"),
		Manifest: v.Manifest, ImageID: v.ImageID, Signer: v.Fingerprint, TrustedAs: v.TrustedAs,
		URL: aciURL.Redacted(), SignatureURL: ascURL.Redacted(),
	}, nil
}

// discover runs appc's discovery for app through c (see the package doc)
// and returns the endpoints found, at least one.
func discover(c *call, app *discovery.App, port uint) (discovery.ACIEndpoints, error) {
	id, unregister := register(c)
	defer unregister()
	host, _, _ := strings.Cut(app.Name.String(), "/")
	if port != 0 {
		host += ":" + strconv.FormatUint(uint64(port), 10)
	}
	headers := map[string]http.Header{host: {callHeader: {id}}}
	insecure := discovery.InsecureNone
	if c.insecureHTTP {
		insecure = discovery.InsecureHTTP
	}
	eps, attempts, err := discovery.DiscoverACIEndpoints(*app, headers, insecure, port)
	if c.ctx.Err() != nil {
		return nil, fmt.Errorf("discovery of %s interrupted: %w", app.Name, context.Cause(c.ctx))
	}
	if err == nil && len(eps) > 0 {
		return eps, nil
	}
	labels := map[string]string{}
	for k, v := range app.Labels {
		labels[string(k)] = v
	}
	var tried []string
	for _, a := range attempts {
		tried = append(tried, fmt.Sprintf("%s: %s", a.Prefix, safeio.Quote(errString(a.Error))))
	}
	c.mu.Lock()
	for _, u := range c.cut {
		tried = append(tried, fmt.Sprintf("%s was cut at %d bytes", safeio.Quote(u), maxDiscoveryPage))
	}
	c.mu.Unlock()
	msg := fmt.Sprintf("discovery found no image for %s", describe(app.Name.String(), labels))
	if len(tried) > 0 {
		msg += " (" + strings.Join(tried, "; ") + ")"
	}
	msg += ": the host must serve an ac-discovery meta tag for the name (nix2aci publish writes one) whose template the labels fill: give version, os and arch"
	if !c.insecureHTTP {
		msg += "; discovery is over https only"
	}
	return nil, &DiscoveryError{Name: app.Name.String(), Msg: msg}
}

func errString(err error) string {
	if err == nil {
		return "no ac-discovery meta tag for the name"
	}
	var de *DownloadError
	if errors.As(err, &de) && de.Err != nil {
		return de.Err.Error()
	}
	return err.Error()
}

// missing explains a signature that could not be downloaded: for a 404,
// whether the image itself is missing too (nothing published under the
// name and labels) or only its signature.
func missing(c *call, err error, name string, labels map[string]string, aciURL, ascURL *url.URL) error {
	var de *DownloadError
	if !errors.As(err, &de) || (de.Status != http.StatusNotFound && de.Status != http.StatusGone) {
		return err
	}
	if body, herr := c.send(http.MethodHead, aciURL, math.MaxInt64, "the image"); herr == nil {
		body.Close()
	} else if errors.As(herr, &de) && (de.Status == http.StatusNotFound || de.Status == http.StatusGone) {
		de.Hint = fmt.Sprintf("%s is not published there: check the name and labels, and what the site publishes", describe(name, labels))
		return de
	}
	return fmt.Errorf("fetching %s: %w", describe(name, labels), &sign.VerifyError{Reason: sign.ReasonMissing,
		Msg: fmt.Sprintf("the image at %s has no signature (%s answered %d): a base must be signed by a key trusted for its name; publish it signed (nix2aci publish --key KEY)", safeio.Quote(aciURL.Redacted()), safeio.Quote(ascURL.Redacted()), de.Status)})
}

// interrupted says that a fetch was interrupted, if it was, rather than
// what that did to the request under way.
func interrupted(ctx context.Context, name string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("fetching %s interrupted: %w", name, context.Cause(ctx))
	}
	return err
}

// verifyFailed adds to a failed verification how to trust the key.
func verifyFailed(err error, name, url string) error {
	var ve *sign.VerifyError
	if errors.As(err, &ve) && (ve.Reason == sign.ReasonUnknownKey || ve.Reason == sign.ReasonUntrusted) {
		return fmt.Errorf("%s from %s: %w (if you trust its publisher: rkt trust --prefix %s fetches the key the site publishes into rkt's trust store; or nix2aci trust --prefix %s KEY.asc --trust-dir DIR)", name, safeio.Quote(url), err, name, name)
	}
	return fmt.Errorf("%s from %s: %w", name, safeio.Quote(url), err)
}

func writeFile(root *os.Root, name string, data []byte) error {
	f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// describe names what was asked for in a message.
func describe(name string, labels map[string]string) string {
	if len(labels) == 0 {
		return name
	}
	var parts []string
	for _, k := range sortedKeys(labels) {
		parts = append(parts, k+"="+safeio.Quote(labels[k]))
	}
	return name + " (" + strings.Join(parts, ", ") + ")"
}

func sortedKeys(m map[string]string) []string { return slices.Sorted(maps.Keys(m)) }

func randomHex() string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) }
