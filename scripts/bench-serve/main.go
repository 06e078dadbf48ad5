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
// first byte and throughput over sequential requests, interleaved so that
// load from elsewhere hits both alike; and a new image that shares layers
// with one served already (busybox, then busybox plus a small package),
// against nix2aci build --layered of the same recipe into a warm output
// directory (its own cache, warmed by the busybox image the same way).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"sort"
	"sync"
	"time"

	"github.com/appc/spec/discovery"
	"github.com/appc/spec/schema/types"

	"github.com/nix2aci/nix2aci/aci"
	"github.com/nix2aci/nix2aci/pipeline"
	"github.com/nix2aci/nix2aci/scripts/internal/benchnet"
	"github.com/nix2aci/nix2aci/serve"
	"github.com/nix2aci/nix2aci/sign"
)

func main() {
	seconds := flag.Float64("seconds", 3, "how long the discovery load runs")
	clients := flag.Int("clients", 32, "concurrent discovery clients")
	flag.Parse()
	work, err := os.MkdirTemp("", "bench-serve-")
	benchnet.Check(err)
	defer os.RemoveAll(work)
	key, err := sign.GenerateKey(sign.KeyOptions{Name: "Bench", Email: "bench@example.com"})
	benchnet.Check(err)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	benchnet.Check(err)
	port := uint(l.Addr().(*net.TCPAddr).Port)
	base := fmt.Sprintf("http://127.0.0.1:%d/acis", port)
	data := filepath.Join(work, "data")
	recipes := filepath.Join(work, "recipes")
	benchnet.Check(os.MkdirAll(recipes, 0o755))
	const extras = 5
	for i := range extras {
		// A small package of its own per image, realised before the
		// timing (see below), so that both sides only write and sign.
		drv := filepath.Join(recipes, fmt.Sprintf("drv%d.nix.in", i))
		benchnet.Check(os.WriteFile(drv, []byte(fmt.Sprintf(`derivation { name = "extra%d-%d"; system = builtins.currentSystem; builder = "/bin/sh"; PATH = "/usr/bin:/bin"; args = [ "-c" "mkdir -p $out/bin; dd if=/dev/urandom of=$out/bin/data bs=1000 count=200 2>/dev/null; echo x > $out/bin/extra%d" ]; }`, i, time.Now().UnixNano(), i)), 0o644))
		benchnet.Check(os.WriteFile(filepath.Join(recipes, fmt.Sprintf("extra%d.nix", i)), []byte(fmt.Sprintf("{ pkgs }: { packages = [ (import ./drv%d.nix.in) ]; exec = [ \"/bin/extra%d\" ]; }\n", i, i)), 0o644))
	}
	var recipeMu sync.Mutex
	captured := map[string]string{} // image name -> the recipe serve built it from
	var logger *slog.Logger
	if os.Getenv("BENCH_DEBUG") != "" {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	opts := serve.Options{Logger: logger, Prefix: "127.0.0.1", BaseURL: base, Key: key, Data: data, Recipes: recipes, Version: "vbench" + fmt.Sprint(time.Now().Unix()),
		Build: func(ctx context.Context, r pipeline.Request) (*pipeline.Result, error) {
			b, err := os.ReadFile(r.Target)
			benchnet.Check(err)
			recipeMu.Lock()
			captured[r.Name] = string(b)
			recipeMu.Unlock()
			t := time.Now()
			res, err := pipeline.Build(ctx, r)
			if os.Getenv("BENCH_DEBUG") != "" {
				log.Printf("serve's pipeline.Build of %s: %s", r.Name, time.Since(t))
			}
			return res, err
		}}
	s, err := serve.New(opts)
	benchnet.Check(err)
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
		benchnet.Check(err)
		eps, _, err := discovery.DiscoverACIEndpoints(*app, nil, discovery.InsecureHTTP, port)
		benchnet.Check(err)
		img := benchnet.Get(client, eps[0].ACI)
		n := int64(len(img)) + int64(len(benchnet.Get(client, eps[0].ASC)))
		tmp := filepath.Join(work, "img.aci")
		benchnet.Check(os.WriteFile(tmp, img, 0o644))
		info, err := aci.InspectFile(tmp)
		benchnet.Check(err)
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
	fmt.Printf("warm fetch of the same, median of 5: %s\n", benchnet.Median(warm).Round(time.Microsecond))

	// Discovery under load.
	fmt.Printf("discovery, %d clients, %.0f s: %s\n", *clients, *seconds, benchnet.Discovery(client, []string{fmt.Sprintf("127.0.0.1:%d", port)}, *clients, *seconds))

	// An image already built: the server against http.FileServer.
	matches, _ := filepath.Glob(filepath.Join(data, "acis", "127.0.0.1", "busybox-*.aci"))
	if len(matches) != 1 {
		log.Fatalf("the app image: %v", matches)
	}
	rel, _ := filepath.Rel(filepath.Join(data, "acis"), matches[0])
	fl, err := net.Listen("tcp", "127.0.0.1:0")
	benchnet.Check(err)
	go http.Serve(fl, http.FileServer(http.Dir(filepath.Join(data, "acis"))))
	urls := []string{base + "/" + rel, fmt.Sprintf("http://%s/%s", fl.Addr(), rel)}
	what := []string{"nix2aci serve  ", "http.FileServer"}
	// Five blocks of interleaved GETs; the figure is the median of the
	// blocks' ratios, so that a phase of load from elsewhere that hits
	// one block does not decide it.
	if f := os.Getenv("BENCH_TTFB_PROFILE"); f != "" {
		out, err := os.Create(f)
		benchnet.Check(err)
		benchnet.Check(pprof.StartCPUProfile(out))
	}
	// A client of its own: its connections to both servers start alike
	// (those of the discovery load above carry their own TCP state).
	fresh := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	const blocks, rounds = 5, 400
	var ratios, tputs []float64
	for b := range blocks {
		ttfb := make([][]time.Duration, 2)
		total := make([]time.Duration, 2)
		var size int64
		for i := range 2 * rounds {
			// A, B, then B, A: the position in a pair does not favour one.
			k := i % 2
			if (i/2)%2 == 1 {
				k = 1 - k
			}
			t := time.Now()
			resp, err := fresh.Get(urls[k])
			benchnet.Check(err)
			buf := make([]byte, 1)
			_, err = io.ReadFull(resp.Body, buf)
			benchnet.Check(err)
			ttfb[k] = append(ttfb[k], time.Since(t))
			n, err := io.Copy(io.Discard, resp.Body)
			benchnet.Check(err)
			resp.Body.Close()
			total[k] += time.Since(t)
			size = n + 1
		}
		r := float64(benchnet.Median(ttfb[0])) / float64(benchnet.Median(ttfb[1]))
		ratios = append(ratios, r)
		tputs = append(tputs, float64(total[1])/float64(total[0]))
		fmt.Printf("block %d: %d GETs each of a %d-byte image: TTFB median %s (%s) / %s (%s): %.2f\n", b+1, rounds, size,
			benchnet.Median(ttfb[0]).Round(time.Microsecond), what[0], benchnet.Median(ttfb[1]).Round(time.Microsecond), what[1], r)
	}
	if os.Getenv("BENCH_TTFB_PROFILE") != "" {
		pprof.StopCPUProfile()
	}
	sort.Float64s(ratios)
	sort.Float64s(tputs)
	fmt.Printf("TTFB ratio serve/FileServer, median of %d blocks: %.2f; throughput ratio: %.2f\n", blocks, ratios[blocks/2], tputs[blocks/2])

	// A new image sharing layers with one served: busybox plus a small
	// package, against nix2aci build --layered of the same recipe into a
	// warm output directory. A throwaway server of another version builds
	// each image first, so that every derivation (the package, the join)
	// is realised for both sides; then the measured server answers the
	// new name, and the CLI builds the recipe serve used.
	bin := filepath.Join(work, "nix2aci")
	out, err := exec.Command("go", "build", "-o", bin, "./cmd/nix2aci").CombinedOutput()
	if err != nil {
		log.Fatalf("go build: %v\n%s", err, out)
	}
	pre := opts
	pre.Data, pre.Version, pre.Build, pre.Work = filepath.Join(work, "pre"), "vpre"+fmt.Sprint(time.Now().Unix()), nil, ""
	ps, err := serve.New(pre)
	benchnet.Check(err)
	defer ps.Close()
	warmDir := filepath.Join(work, "warm")
	keyFile := filepath.Join(work, "key.asc")
	kf, err := os.OpenFile(keyFile, os.O_CREATE|os.O_WRONLY, 0o600)
	benchnet.Check(err)
	benchnet.Check(sign.WritePrivateKey(kf, key))
	benchnet.Check(kf.Close())
	cli := func(name string, extra ...string) time.Duration {
		recipeMu.Lock()
		r := captured[name]
		recipeMu.Unlock()
		f := filepath.Join(work, "cli-recipe.nix")
		benchnet.Check(os.WriteFile(f, []byte(r), 0o644))
		cmd := exec.Command(bin, "build", f, "--layered", "--name", name, "--out", warmDir, "--no-link", "--pkgs", recipes,
			"--cache-dir", filepath.Join(work, "cli-cache"), "--cache-key", filepath.Join(work, "cli-cache.key"))
		cmd.Args = append(cmd.Args, extra...)
		t := time.Now()
		out, err := cmd.CombinedOutput()
		if err != nil {
			log.Fatalf("nix2aci build %s: %v\n%s", name, err, out)
		}
		return time.Since(t)
	}
	cli("127.0.0.1/busybox") // warm: the busybox layers in --out and the cache
	cli("127.0.0.1/busybox", "--out", warmDir+"-signed", "--sign", "--key", keyFile)
	var sv, cl, cs []time.Duration
	if f := os.Getenv("BENCH_CPUPROFILE"); f != "" {
		out, err := os.Create(f)
		benchnet.Check(err)
		benchnet.Check(pprof.StartCPUProfile(out))
		defer pprof.StopCPUProfile()
	}
	for i := range extras {
		name := fmt.Sprintf("127.0.0.1/busybox/extra%d", i)
		file := fmt.Sprintf("127.0.0.1/busybox/extra%d-latest-linux-amd64.aci", i)
		rec := httptest.NewRecorder()
		ps.ServeHTTP(rec, httptest.NewRequest("GET", base+"/"+file, nil))
		if rec.Code != 200 {
			log.Fatalf("pre-building %s: %d %s", name, rec.Code, rec.Body)
		}
		t := time.Now()
		benchnet.Get(client, base+"/"+file)
		sv = append(sv, time.Since(t))
		cl = append(cl, cli(name))
		// The same, signed as serve signs (into another warm directory:
		// the unsigned one's files would be signed afresh).
		cs = append(cs, cli(name, "--out", warmDir+"-signed", "--sign", "--key", keyFile))
	}
	fmt.Printf("new image on shared layers (busybox + a package), median of %d: serve %s (build, sign, publish, first GET), nix2aci build --layered into a warm directory %s: ratio %.2f\n",
		extras, benchnet.Median(sv).Round(time.Millisecond), benchnet.Median(cl).Round(time.Millisecond), float64(benchnet.Median(sv))/float64(benchnet.Median(cl)))
	fmt.Printf("  against nix2aci build --layered --sign into a warm directory %s: ratio %.2f\n", benchnet.Median(cs).Round(time.Millisecond), float64(benchnet.Median(sv))/float64(benchnet.Median(cs)))
}
