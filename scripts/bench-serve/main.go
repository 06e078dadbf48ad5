// Command bench-serve measures nix2aci serve on loopback, in one run: a
// benchmark, not a test; it prints figures and exits 0 unless it cannot
// run. Needs Nix (the offline package set is enough).
//
//	NIX_CONFIG="substituters =" go run ./scripts/bench-serve [-seconds 3] [-clients 32]
//
// It measures: a cold fetch end to end (discovery, app image, signature,
// then each layer the same way) of an image not built yet, and the same
// fetch warm; discovery requests per second with p50/p99 latency at
// -clients concurrent clients; and an image already built, served by the
// server and by Go's http.FileServer from the same file: median time to
// first byte and throughput over sequential requests.
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/appc/spec/discovery"
	"github.com/appc/spec/schema/types"

	"github.com/nix2aci/nix2aci/aci"
	"github.com/nix2aci/nix2aci/serve"
	"github.com/nix2aci/nix2aci/sign"
)

func main() {
	seconds := flag.Float64("seconds", 3, "how long the discovery load runs")
	clients := flag.Int("clients", 32, "concurrent discovery clients")
	flag.Parse()
	work, err := os.MkdirTemp("", "bench-serve-")
	check(err)
	defer os.RemoveAll(work)
	key, err := sign.GenerateKey(sign.KeyOptions{Name: "Bench", Email: "bench@example.com"})
	check(err)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	check(err)
	port := uint(l.Addr().(*net.TCPAddr).Port)
	base := fmt.Sprintf("http://127.0.0.1:%d/acis", port)
	data := filepath.Join(work, "data")
	s, err := serve.New(serve.Options{Prefix: "127.0.0.1", BaseURL: base, Key: key, Data: data, Version: "vbench" + fmt.Sprint(time.Now().Unix())})
	check(err)
	defer s.Close()
	go http.Serve(l, s)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	labels := func(v string) map[types.ACIdentifier]string {
		return map[types.ACIdentifier]string{"version": v, "os": "linux", "arch": "amd64"}
	}
	version := "latest"

	// Fetch: what rkt fetch does over the network (verification aside).
	var fetch func(name string, l map[types.ACIdentifier]string) int64
	fetch = func(name string, l map[types.ACIdentifier]string) int64 {
		app, err := discovery.NewApp(name, l)
		check(err)
		eps, _, err := discovery.DiscoverACIEndpoints(*app, nil, discovery.InsecureHTTP, port)
		check(err)
		img := get(client, eps[0].ACI)
		n := int64(len(img)) + int64(len(get(client, eps[0].ASC)))
		tmp := filepath.Join(work, "img.aci")
		check(os.WriteFile(tmp, img, 0o644))
		info, err := aci.InspectFile(tmp)
		check(err)
		for _, d := range info.Manifest.Dependencies {
			dl := map[types.ACIdentifier]string{}
			for _, lb := range d.Labels {
				dl[lb.Name] = lb.Value
			}
			n += fetch(d.ImageName.String(), dl)
		}
		return n
	}
	t0 := time.Now()
	n := fetch("127.0.0.1/busybox", labels(version))
	fmt.Printf("cold fetch of 127.0.0.1/busybox (build, publish, discovery, image, signature, layers): %s, %d bytes\n", time.Since(t0).Round(time.Millisecond), n)
	var warm []time.Duration
	for range 5 {
		t0 = time.Now()
		fetch("127.0.0.1/busybox", labels(version))
		warm = append(warm, time.Since(t0))
	}
	fmt.Printf("warm fetch of the same, median of 5: %s\n", median(warm).Round(time.Microsecond))

	// Discovery under load.
	var mu sync.Mutex
	var lat []time.Duration
	deadline := time.Now().Add(time.Duration(*seconds * float64(time.Second)))
	var wg sync.WaitGroup
	for range *clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			for time.Now().Before(deadline) {
				t := time.Now()
				get(client, fmt.Sprintf("http://127.0.0.1:%d/curl/jq?ac-discovery=1", port))
				mine = append(mine, time.Since(t))
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	fmt.Printf("discovery, %d clients, %.0f s: %.0f requests/s, p50 %s, p99 %s\n", *clients, *seconds, float64(len(lat))/(*seconds),
		lat[len(lat)/2].Round(time.Microsecond), lat[len(lat)*99/100].Round(time.Microsecond))

	// An image already built: the server against http.FileServer.
	matches, _ := filepath.Glob(filepath.Join(data, "acis", "127.0.0.1", "busybox-*.aci"))
	if len(matches) != 1 {
		log.Fatalf("the app image: %v", matches)
	}
	rel, _ := filepath.Rel(filepath.Join(data, "acis"), matches[0])
	fl, err := net.Listen("tcp", "127.0.0.1:0")
	check(err)
	go http.Serve(fl, http.FileServer(http.Dir(filepath.Join(data, "acis"))))
	for _, c := range []struct{ what, url string }{
		{"nix2aci serve  ", base + "/" + rel},
		{"http.FileServer", fmt.Sprintf("http://%s/%s", fl.Addr(), rel)},
	} {
		var ttfb []time.Duration
		var bytes int64
		t0 := time.Now()
		for range 200 {
			t := time.Now()
			resp, err := client.Get(c.url)
			check(err)
			buf := make([]byte, 1)
			_, err = io.ReadFull(resp.Body, buf)
			check(err)
			ttfb = append(ttfb, time.Since(t))
			k, err := io.Copy(io.Discard, resp.Body)
			check(err)
			resp.Body.Close()
			bytes += k + 1
		}
		d := time.Since(t0)
		fmt.Printf("%s: %d GETs of a %d-byte image: TTFB median %s, %.0f MB/s\n", c.what, 200, bytes/200, median(ttfb).Round(time.Microsecond), float64(bytes)/d.Seconds()/1e6)
	}
}

func get(c *http.Client, url string) []byte {
	resp, err := c.Get(url)
	check(err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	check(err)
	if resp.StatusCode != 200 {
		log.Fatalf("GET %s: %s: %s", url, resp.Status, b)
	}
	return b
}

func median(d []time.Duration) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func check(err error) {
	if err != nil {
		log.Fatal(err)
	}
}
