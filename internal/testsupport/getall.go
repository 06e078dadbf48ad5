package testsupport

import (
	"io"
	"net/http"
	"sync"
	"testing"
)

// Response is what one of GetAll's GETs got. Where the GET failed (which
// GetAll reports), it is zero.
type Response struct {
	StatusCode int
	Status     string // as http.Response's: "200 OK"
	Header     http.Header
	Host       string // the host that answered, after any redirect
	Body       []byte
}

// GetAll GETs every url at once, each in a goroutine of its own, with c
// (http.DefaultClient when nil), and returns what each got, in the order
// of urls. It reads at most limit bytes of a body, or all of it with
// limit 0. A GET that fails is an error of the test (t.Errorf), not
// fatal: the others still count.
func GetAll(t testing.TB, c *http.Client, urls []string, limit int64) []Response {
	t.Helper()
	if c == nil {
		c = http.DefaultClient
	}
	out := make([]Response, len(urls))
	var wg sync.WaitGroup
	for i, u := range urls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := c.Get(u)
			if err != nil {
				t.Errorf("GET %s: %v", u, err)
				return
			}
			defer resp.Body.Close()
			var body io.Reader = resp.Body
			if limit > 0 {
				body = io.LimitReader(body, limit)
			}
			b, _ := io.ReadAll(body)
			out[i] = Response{StatusCode: resp.StatusCode, Status: resp.Status, Header: resp.Header, Host: resp.Request.URL.Host, Body: b}
		}()
	}
	wg.Wait()
	return out
}
