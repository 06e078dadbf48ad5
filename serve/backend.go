package serve

import (
	"context"
	"net/http"

	"github.com/opencontainers/go-digest"

	"github.com/nix2aci/nix2aci/pipeline"
	"github.com/nix2aci/nix2aci/publish"
)

// backend is where the images served are: the data directory (disk), or
// with Options.Store the bucket (store). It is chosen once, in New, so
// that each protocol is written once over both and no request asks
// which one it is talking to.
//
// An image file is named by its path under the base path
// (HOST/NAME-VERSION-OS-ARCH.aci), as the request names it.
type backend interface {
	// kind labels the requests answered without a build (the hits
	// metric).
	kind() string
	// have says whether the image file rel (".aci", with or without
	// ".asc") is there to serve, complete with its signature (and, in the
	// store, its layers).
	have(ctx context.Context, rel string) (bool, error)
	// send answers r with rel when have would say it is there: its bytes
	// from disk, or a redirect to the bucket. latest says the name asked
	// for was "latest", whose answer must not be kept. False: it is not
	// there, nothing was written.
	send(w http.ResponseWriter, r *http.Request, rel string, latest bool) bool
	// claim makes the build of q's image this server's alone: it returns
	// the context the build runs within and a release to call after it;
	// a nil release with no failure says another replica built it
	// meanwhile.
	claim(q *request) (context.Context, func(), *failure)
	// complete makes the images a build published into the data
	// directory servable (rep says which were published now, res what
	// the build made). It is called with publishMu held and may let it
	// go while it waits, holding the images as read.
	complete(ctx context.Context, res *pipeline.Result, rep *publish.Report) error
	// sendBlob answers r with the OCI blob d, as send does (see
	// registry.go).
	sendBlob(w http.ResponseWriter, r *http.Request, d digest.Digest) bool
	// completeOCI makes the OCI image q, its blobs ds in the data
	// directory and its manifest m among them, servable: the store
	// uploads the blobs, then q's reference naming m. It is called before
	// the reference is written into the data directory.
	completeOCI(ctx context.Context, q *request, ds []digest.Digest, m digest.Digest) error
	// fetchOCI brings the OCI image q, built by another replica, into the
	// data directory: its manifest and reference (its blobs are served
	// from where they are). False: it is not complete elsewhere.
	fetchOCI(ctx context.Context, q *request) (bool, error)
}

// disk serves the data directory itself.
type disk struct{ s *Server }

func (disk) kind() string { return "disk" }

func (d disk) have(_ context.Context, rel string) (bool, error) {
	_, ok := d.s.stat(rel)
	return ok, nil
}

func (d disk) send(w http.ResponseWriter, r *http.Request, rel string, latest bool) bool {
	return d.s.sendFile(w, r, rel, latest)
}

func (d disk) claim(*request) (context.Context, func(), *failure) {
	return d.s.ctx, func() {}, nil
}

func (d disk) sendBlob(w http.ResponseWriter, r *http.Request, dg digest.Digest) bool {
	return d.s.sendBlobFile(w, r, dg)
}

func (disk) completeOCI(context.Context, *request, []digest.Digest, digest.Digest) error {
	return nil
}

func (disk) fetchOCI(context.Context, *request) (bool, error) { return false, nil }

func (disk) complete(context.Context, *pipeline.Result, *publish.Report) error { return nil }
