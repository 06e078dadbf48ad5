package testsupport

import (
	"io"
	"net/http"
	"testing"
)

// maxBody is the most a helper here reads of a response's body.
const maxBody = 256 << 20

// Get GETs url with the default client and returns the body; an error, or
// an answer other than 200 OK, is fatal (the message holds the body).
func Get(t testing.TB, url string) []byte {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s: %s", url, resp.Status, b)
	}
	return b
}
