// Command bench-serve-s3 measures nix2aci serve on a bucket, on loopback:
// a benchmark, not a test; it prints figures and exits 0 unless it cannot
// run. Needs Nix (the offline package set is enough) and versitygw
// (scripts/setup installs it).
//
//	NIX_CONFIG="substituters =" go run ./scripts/bench-serve-s3 [-seconds 3] [-clients 32] [-n 200]
//
// It starts Versity's S3 gateway over a temporary directory and two
// servers (replicas, in this process) on one bucket; replica A builds
// 127.0.0.1/busybox. Then: the median time to first byte of the app image
// fetched through the server's redirect (GET of the server, 307, GET of
// the signed URL), against a GET of a signed URL of the object straight
// from the store, in a rotating order; the same through a replica in a
// process of its own (the nix2aci binary, as deployed); and discovery
// requests per second, p50 and p99 at -clients concurrent clients,
// against replica A alone and against A and B in turn. Both replicas
// share this machine's cores, so the second replica shows what a load
// balancer in front of two costs, not what two machines would give.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/nix2aci/nix2aci/objstore"
	"github.com/nix2aci/nix2aci/objstore/objstoretest"
	"github.com/nix2aci/nix2aci/scripts/internal/benchnet"
	"github.com/nix2aci/nix2aci/serve"
	"github.com/nix2aci/nix2aci/sign"
)

func main() {
	seconds := flag.Float64("seconds", 3, "how long each discovery load runs")
	clients := flag.Int("clients", 32, "concurrent discovery clients")
	n := flag.Int("n", 200, "sequential GETs for the time to first byte")
	flag.Parse()
	work, err := os.MkdirTemp("", "bench-serve-s3-")
	benchnet.Check(err)
	defer os.RemoveAll(work)
	g, err := objstoretest.Launch(work)
	benchnet.Check(err)
	defer g.Stop()
	st, err := g.CreateBucket("images", objstore.S3Options{})
	benchnet.Check(err)
	key, err := sign.GenerateKey(sign.KeyOptions{Name: "Bench", Email: "bench@example.com"})
	benchnet.Check(err)
	version := "vbench" + fmt.Sprint(time.Now().Unix())
	replica := func(name string) (string, *serve.Server) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		benchnet.Check(err)
		base := fmt.Sprintf("http://%s/acis", l.Addr())
		s, err := serve.New(serve.Options{Prefix: "127.0.0.1", BaseURL: base, Key: key, Data: work + "/data-" + name, Version: version, Store: st, Replica: name})
		benchnet.Check(err)
		go http.Serve(l, s)
		return l.Addr().String(), s
	}
	a, sa := replica("a")
	defer sa.Close()
	b, sb := replica("b")
	defer sb.Close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}

	rel := "127.0.0.1/busybox-" + version + "-linux-amd64.aci"
	t0 := time.Now()
	img := benchnet.Get(client, "http://"+a+"/acis/"+rel)
	fmt.Printf("cold: build, publish and upload of 127.0.0.1/busybox through replica A: %s, %d bytes\n", time.Since(t0).Round(time.Millisecond), len(img))

	one := func(u string) time.Duration {
		t := time.Now()
		resp, err := client.Get(u)
		benchnet.Check(err)
		buf := make([]byte, 1)
		_, err = io.ReadFull(resp.Body, buf)
		benchnet.Check(err)
		d := time.Since(t)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			log.Fatalf("GET %s: %s", u, resp.Status)
		}
		return d
	}
	direct, err := st.URL(context.Background(), "acis/"+rel)
	benchnet.Check(err)
	// The three in turn, so that drift on a shared machine hits each
	// alike, and in a rotating order, so that none always comes first.
	var da, db, ds []time.Duration
	for i := range *n {
		for k := range 3 {
			switch (i + k) % 3 {
			case 0:
				da = append(da, one("http://"+a+"/acis/"+rel))
			case 1:
				db = append(db, one("http://"+b+"/acis/"+rel))
			case 2:
				ds = append(ds, one(direct))
			}
		}
	}
	viaA, viaB, store := benchnet.Median(da), benchnet.Median(db), benchnet.Median(ds)
	// The redirect alone: the server's share.
	noFollow := &http.Client{Transport: client.Transport, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	// redirectAlone is the median time of the 307 for url, not followed.
	redirectAlone := func(url string) time.Duration {
		var d []time.Duration
		for range *n {
			t := time.Now()
			resp, err := noFollow.Get(url)
			benchnet.Check(err)
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			d = append(d, time.Since(t))
			if resp.StatusCode != http.StatusTemporaryRedirect {
				log.Fatalf("GET %s: %s, want 307", url, resp.Status)
			}
		}
		return benchnet.Median(d)
	}
	dr := redirectAlone("http://" + a + "/acis/" + rel)
	fmt.Printf("time to first byte of the %d-byte app image, median of %d GETs:\n", len(img), *n)
	fmt.Printf("  through replica A's redirect:        %s (%.2fx the store's)\n", viaA.Round(time.Microsecond), float64(viaA)/float64(store))
	fmt.Printf("  through replica B's redirect (built by A, its disk empty): %s (%.2fx)\n", viaB.Round(time.Microsecond), float64(viaB)/float64(store))
	fmt.Printf("  a signed URL, straight from the store: %s\n", store.Round(time.Microsecond))
	fmt.Printf("  the redirect alone (307 from replica A): %s\n", dr.Round(time.Microsecond))

	// A replica in a process of its own, as one is deployed: the server's
	// work after its 307 does not share this process with the client.
	{
		bin := work + "/nix2aci"
		out, err := exec.Command("go", "build", "-o", bin, "./cmd/nix2aci").CombinedOutput()
		if err != nil {
			log.Fatalf("go build: %v\n%s", err, out)
		}
		kf := work + "/key.asc"
		f, err := os.OpenFile(kf, os.O_CREATE|os.O_WRONLY, 0o600)
		benchnet.Check(err)
		benchnet.Check(sign.WritePrivateKey(f, key))
		benchnet.Check(f.Close())
		l, err := net.Listen("tcp", "127.0.0.1:0")
		benchnet.Check(err)
		addr := l.Addr().String()
		l.Close()
		cmd := exec.Command(bin, "serve", "--listen", addr, "--prefix", "127.0.0.1", "--base-url", "http://"+addr+"/acis",
			"--data", work+"/data-c", "--key", kf, "--store", "s3://images", "--s3-endpoint", g.Endpoint)
		cmd.Env = append(os.Environ(), "AWS_ACCESS_KEY_ID="+objstoretest.AccessKey, "AWS_SECRET_ACCESS_KEY="+objstoretest.SecretKey, "AWS_REGION=us-east-1")
		// Its log goes to a file, as a service's goes to its journal.
		logf, err := os.Create(work + "/replica-c.log")
		benchnet.Check(err)
		defer logf.Close()
		cmd.Stderr = logf
		benchnet.Check(cmd.Start())
		defer func() { cmd.Process.Kill(); cmd.Wait() }()
		label := ""
		for i := 0; i < 300 && label == ""; i++ {
			time.Sleep(50 * time.Millisecond)
			b, _ := os.ReadFile(work + "/replica-c.log")
			if s := string(b); strings.Contains(s, "rkt fetch") {
				fmt.Sscanf(s[strings.Index(s, "version "):], "version %s", &label)
			}
		}
		if label == "" {
			b, _ := os.ReadFile(work + "/replica-c.log")
			log.Fatalf("the replica process did not start:\n%s", b)
		}
		crel := "127.0.0.1/busybox-" + label + "-linux-amd64.aci"
		benchnet.Get(client, "http://"+addr+"/acis/"+crel) // built, published, uploaded
		cdirect, err := st.URL(context.Background(), "acis/"+crel)
		benchnet.Check(err)
		var dc, dd []time.Duration
		for i := range *n {
			if i%2 == 0 {
				dc = append(dc, one("http://"+addr+"/acis/"+crel))
				dd = append(dd, one(cdirect))
			} else {
				dd = append(dd, one(cdirect))
				dc = append(dc, one("http://"+addr+"/acis/"+crel))
			}
		}
		fmt.Printf("  the redirect alone (307 from the replica process): %s\n", redirectAlone("http://"+addr+"/acis/"+crel).Round(time.Microsecond))
		fmt.Printf("  through the redirect of a replica in its own process: %s (%.2fx a signed URL straight from the store, %s, in turn)\n",
			benchnet.Median(dc).Round(time.Microsecond), float64(benchnet.Median(dc))/float64(benchnet.Median(dd)), benchnet.Median(dd).Round(time.Microsecond))
	}

	for _, c := range []struct {
		what  string
		hosts []string
	}{{"replica A alone", []string{a}}, {"replicas A and B in turn", []string{a, b}}} {
		fmt.Printf("discovery, %s, %d clients, %.0f s: %s\n", c.what, *clients, *seconds, benchnet.Discovery(client, c.hosts, *clients, *seconds))
	}
}
