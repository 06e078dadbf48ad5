package fetch

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/appc/spec/discovery"

	"github.com/nix2aci/nix2aci/internal/safeio"
)

const (
	// maxRedirects is how many redirects one request may follow.
	maxRedirects = 10
	// maxDiscoveryPage bounds what is read of a discovery page.
	maxDiscoveryPage = 1 << 20
	// callHeader marks appc's discovery requests with the fetch they
	// belong to; it never leaves the process.
	callHeader = "X-Nix2aci-Fetch-Call"
)

// defaultTransport is the default client's: no proxy (library code does
// not read the environment), bounded dials and TLS handshakes.
var defaultTransport = &http.Transport{
	DialContext:         (&net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
	TLSHandshakeTimeout: 30 * time.Second,
	IdleConnTimeout:     90 * time.Second,
	MaxIdleConns:        16,
	ForceAttemptHTTP2:   true,
}

// call is one fetch's way of sending requests: its context, its client
// (with the redirect policy), its stall timeout.
type call struct {
	ctx          context.Context
	client       *http.Client
	stall        time.Duration
	insecureHTTP bool

	mu  sync.Mutex
	cut []string // discovery pages cut at maxDiscoveryPage
}

func newCall(ctx context.Context, o Options) *call {
	var c http.Client
	if o.Client != nil {
		c = *o.Client
	} else {
		c.Transport = defaultTransport
	}
	c.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if len(via) >= maxRedirects {
			return fmt.Errorf("more than %d redirects", maxRedirects)
		}
		return redirectAllowed(via[len(via)-1].URL, req.URL, o.InsecureHTTP)
	}
	stall := o.StallTimeout
	if stall <= 0 {
		stall = DefaultStallTimeout
	}
	return &call{ctx: ctx, client: &c, stall: stall, insecureHTTP: o.InsecureHTTP}
}

// redirectAllowed is the redirect policy (see the package doc).
func redirectAllowed(from, to *url.URL, insecureHTTP bool) error {
	switch {
	case from.Scheme == "https" && to.Scheme == "https":
		return nil
	case from.Scheme == "http" && to.Scheme == "https" && from.Hostname() == to.Hostname():
		return nil
	case from.Scheme == "http" && to.Scheme == "http" && insecureHTTP && from.Host == to.Host:
		return nil
	}
	return fmt.Errorf("refused a redirect from %s to %s: only https to https is followed (and from plain http, to the same host)", safeio.Quote(from.Redacted()), safeio.Quote(to.Redacted()))
}

// checkURL checks a URL discovery gave before anything is asked of it.
func (c *call) checkURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.Opaque != "" || (u.Scheme != "https" && u.Scheme != "http") {
		return nil, fmt.Errorf("%s is not an http(s) URL with a host", safeio.Quote(raw))
	}
	if u.User != nil {
		return nil, fmt.Errorf("%s carries a user name or password; a discovery template must not", safeio.Quote(u.Redacted()))
	}
	if u.Scheme == "http" && !c.insecureHTTP {
		return nil, fmt.Errorf("%s is plain http: images are fetched over https only (rkt's --insecure-options=http allows http, for tests)", safeio.Quote(raw))
	}
	return u, nil
}

// errStalled is the cause of a request stopped by its stall timeout.
var errStalled = errors.New("stalled")

// open sends req with the call's client and watches it: the answer's
// headers, and then each read of its body, must come within the stall
// timeout; the body fails past limit bytes, a Content-Length above it
// at once. what names the file in errors.
func (c *call) open(req *http.Request, limit int64, what string) (*http.Response, error) {
	ctx, cancel := context.WithCancelCause(req.Context())
	timer := time.AfterFunc(c.stall, func() { cancel(errStalled) })
	resp, err := c.client.Do(req.WithContext(ctx))
	timer.Stop()
	if err != nil {
		cancel(nil)
		return nil, c.explain(ctx, req.URL, err)
	}
	if resp.ContentLength > limit {
		resp.Body.Close()
		cancel(nil)
		return nil, &TooLargeError{URL: req.URL.Redacted(), What: what, Max: limit}
	}
	resp.Body = &watched{c: c, body: resp.Body, ctx: ctx, cancel: cancel, timer: timer, limit: limit, url: req.URL, what: what}
	return resp, nil
}

// explain makes a failed request's error say what happened: the fetch
// interrupted, the server stalled, or what the client said.
func (c *call) explain(ctx context.Context, u *url.URL, err error) error {
	switch {
	case c.ctx.Err() != nil:
		return fmt.Errorf("interrupted: %w", context.Cause(c.ctx))
	case context.Cause(ctx) == errStalled:
		return &DownloadError{URL: u.Redacted(), Err: fmt.Errorf("the server sent nothing for %s", c.stall)}
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err // the URL is said once, by DownloadError
	}
	return &DownloadError{URL: u.Redacted(), Err: err}
}

// watched is a response body read under the call's stall timeout and a
// size limit.
type watched struct {
	c      *call
	body   io.ReadCloser
	ctx    context.Context
	cancel context.CancelCauseFunc
	timer  *time.Timer
	n      int64
	limit  int64
	url    *url.URL
	what   string
	err    error
}

func (w *watched) Read(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	w.timer.Reset(w.c.stall)
	n, err := w.body.Read(p)
	w.timer.Stop()
	w.n += int64(n)
	if w.n > w.limit {
		n -= int(w.n - w.limit)
		w.err = &TooLargeError{URL: w.url.Redacted(), What: w.what, Max: w.limit}
		return n, w.err
	}
	if err != nil && err != io.EOF {
		w.err = w.c.explain(w.ctx, w.url, err)
		return n, w.err
	}
	return n, err
}

func (w *watched) Close() error {
	w.timer.Stop()
	w.cancel(nil)
	return w.body.Close()
}

// get sends a GET for u under the call's rules and returns the answer, a
// 200, or a *DownloadError with the status.
func (c *call) get(u *url.URL, limit int64, what string) (io.ReadCloser, error) {
	return c.send(http.MethodGet, u, limit, what)
}

func (c *call) send(method string, u *url.URL, limit int64, what string) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(c.ctx, method, u.String(), nil)
	if err != nil {
		return nil, &DownloadError{URL: u.Redacted(), Err: err}
	}
	resp, err := c.open(req, limit, what)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, &DownloadError{URL: u.Redacted(), Status: resp.StatusCode}
	}
	return resp.Body, nil
}

// download writes the body of u, at most limit bytes, to w.
func (c *call) download(u *url.URL, limit int64, what string, w io.Writer) error {
	body, err := c.get(u, limit, what)
	if err != nil {
		return err
	}
	defer body.Close()
	_, err = io.CopyBuffer(w, body, make([]byte, 256<<10))
	return err
}

// calls are the fetches whose discovery is under way, by their mark.
var calls sync.Map // string -> *call

// register marks c for appc's discovery client and returns the mark and
// a function that removes it.
func register(c *call) (string, func()) {
	var b [16]byte
	rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	calls.Store(id, c)
	return id, func() { calls.Delete(id) }
}

// marked sends appc's discovery requests that carry a fetch's mark
// through that fetch's client, and any other through next.
type marked struct{ next http.RoundTripper }

func init() {
	next := discovery.Client.Transport
	if next == nil {
		next = http.DefaultTransport
	}
	discovery.Client.Transport = marked{next: next}
}

func (m marked) RoundTrip(req *http.Request) (*http.Response, error) {
	id := req.Header.Get(callHeader)
	if id == "" {
		return m.next.RoundTrip(req)
	}
	v, ok := calls.Load(id)
	if !ok {
		return nil, errors.New("this fetch is over")
	}
	c := v.(*call)
	if req.URL.Scheme != "https" && !(req.URL.Scheme == "http" && c.insecureHTTP) {
		return nil, fmt.Errorf("%s is not https", safeio.Quote(req.URL.Redacted()))
	}
	r := req.Clone(c.ctx)
	r.Header.Del(callHeader)
	resp, err := c.open(r, maxDiscoveryPage, "the discovery page")
	if err != nil {
		return nil, err
	}
	resp.Body = &cutNoted{ReadCloser: resp.Body, c: c, url: r.URL.Redacted()}
	return resp, nil
}

// cutNoted notes a discovery page cut at its limit: appc's parser stops
// at the error and keeps what it read.
type cutNoted struct {
	io.ReadCloser
	c     *call
	url   string
	noted bool
}

func (n *cutNoted) Read(p []byte) (int, error) {
	k, err := n.ReadCloser.Read(p)
	var tl *TooLargeError
	if errors.As(err, &tl) && !n.noted {
		n.noted = true
		n.c.mu.Lock()
		n.c.cut = append(n.c.cut, n.url)
		n.c.mu.Unlock()
	}
	return k, err
}
