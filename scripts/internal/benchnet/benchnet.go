// Package benchnet holds what the serve benchmarks (scripts/bench-serve,
// scripts/bench-serve-s3) share: GETs that must succeed, medians, and a
// discovery load of concurrent clients for a while. Benchmarks, not
// tests: a failure ends the program.
package benchnet

import (
	"fmt"
	"io"
	"log"
	"net/http"
	"sort"
	"sync"
	"time"
)

// Check ends the program on an error.
func Check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}

// Get reads url whole; anything but 200 ends the program.
func Get(c *http.Client, url string) []byte {
	resp, err := c.Get(url)
	Check(err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	Check(err)
	if resp.StatusCode != 200 {
		log.Fatalf("GET %s: %s: %s", url, resp.Status, b)
	}
	return b
}

// Median is the median of d (d is left as it is).
func Median(d []time.Duration) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

// Load is what a discovery load measured.
type Load struct {
	Requests int
	Seconds  float64
	P50, P99 time.Duration
}

func (l Load) String() string {
	return fmt.Sprintf("%.0f requests/s, p50 %s, p99 %s", float64(l.Requests)/l.Seconds, l.P50.Round(time.Microsecond), l.P99.Round(time.Microsecond))
}

// Discovery runs clients concurrent clients for seconds, each asking for
// the discovery page of one name (?ac-discovery=1) of the hosts in turn.
func Discovery(c *http.Client, hosts []string, clients int, seconds float64) Load {
	var mu sync.Mutex
	var lat []time.Duration
	deadline := time.Now().Add(time.Duration(seconds * float64(time.Second)))
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			for k := i; time.Now().Before(deadline); k++ {
				t := time.Now()
				Get(c, fmt.Sprintf("http://%s/curl/jq?ac-discovery=1", hosts[k%len(hosts)]))
				mine = append(mine, time.Since(t))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	return Load{Requests: len(lat), Seconds: seconds, P50: lat[len(lat)/2], P99: lat[len(lat)*99/100]}
}
