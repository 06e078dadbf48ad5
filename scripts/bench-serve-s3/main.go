// Command bench-serve-s3 measures nix2aci serve on a bucket, on loopback:
// a benchmark, not a test; it prints figures and exits 0 unless it cannot
// run. Needs Nix (the offline package set is enough) and versitygw
// (scripts/setup-test installs it).
//
//	NIX_CONFIG="substituters =" go run ./scripts/bench-serve-s3 [-seconds 3] [-clients 32] [-n 200]
//
// It starts Versity's S3 gateway over a temporary directory and two
// servers (replicas, in this process) on one bucket; replica A builds
// 127.0.0.1/busybox. Then: the median time to first byte of the app image
// fetched through the server's redirect (GET of the server, 307, GET of
// the signed URL), against a GET of the signed URL straight from the
// store, all in turn and in a rotating order. The same through a replica
// in a process of its own (the nix2aci binary, as deployed). Beside each,
// the floor of a redirect: net/http answering the same 307 and nothing
// else, in this process and in one of its own, and, in one of its own, a
// fixed 307 written to the socket with no HTTP server at all (this
// program started again in that mode). Last, discovery requests per
// second, p50 and p99 at -clients concurrent clients, against replica A
// alone and against A and B in turn. Both replicas share this machine's
// cores, so the second replica shows what a load balancer in front of
// two costs, not what two machines would give.
package main

import (
	"bytes"
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
	"syscall"
	"time"

	"github.com/nix2aci/nix2aci/objstore"
	"github.com/nix2aci/nix2aci/objstore/objstoretest"
	"github.com/nix2aci/nix2aci/scripts/internal/benchnet"
	"github.com/nix2aci/nix2aci/serve"
	"github.com/nix2aci/nix2aci/sign"
)

func main() {
	if mode := os.Getenv(floorEnv); mode != "" {
		runFloor(mode, os.Getenv(floorEnv+"_TO"))
		return
	}
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
	// inTurn is the median time to first byte of each of urls, GET in
	// turn, so that drift on a shared machine hits each alike, and in a
	// rotating order, so that none always comes first.
	inTurn := func(urls ...string) []time.Duration {
		d := make([][]time.Duration, len(urls))
		for i := range *n {
			for k := range urls {
				j := (i + k) % len(urls)
				d[j] = append(d[j], one(urls[j]))
			}
		}
		m := make([]time.Duration, len(urls))
		for j := range d {
			m[j] = benchnet.Median(d[j])
		}
		return m
	}
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
	ratio := func(d, store time.Duration) string {
		return fmt.Sprintf("%s (%.2fx)", d.Round(time.Microsecond), float64(d)/float64(store))
	}

	direct, err := st.URL(context.Background(), "acis/"+rel)
	benchnet.Check(err)
	// The floor of a redirect in this process: net/http answering the
	// same 307 and doing nothing else.
	floor, err := net.Listen("tcp", "127.0.0.1:0")
	benchnet.Check(err)
	go http.Serve(floor, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { redirect(w, direct) }))
	m := inTurn("http://"+a+"/acis/"+rel, "http://"+b+"/acis/"+rel, "http://"+floor.Addr().String()+"/", direct)
	fmt.Printf("time to first byte of the %d-byte app image, median of %d GETs of each in turn (x: the store's):\n", len(img), *n)
	fmt.Printf("  through replica A's redirect:        %s\n", ratio(m[0], m[3]))
	fmt.Printf("  through replica B's redirect (built by A, its disk empty): %s\n", ratio(m[1], m[3]))
	fmt.Printf("  through net/http answering the same 307 and nothing else (the floor in this process): %s\n", ratio(m[2], m[3]))
	fmt.Printf("  a signed URL, straight from the store: %s\n", m[3].Round(time.Microsecond))
	fmt.Printf("  the redirect alone (307 from replica A): %s\n", redirectAlone("http://"+a+"/acis/"+rel).Round(time.Microsecond))

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
		addr := freeAddr()
		cmd := exec.Command(bin, "serve", "--listen", addr, "--prefix", "127.0.0.1", "--base-url", "http://"+addr+"/acis",
			"--data", work+"/data-c", "--key", kf, "--store", "s3://images", "--s3-endpoint", g.Endpoint)
		cmd.SysProcAttr = dieWithUs
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
		// The floors of a redirect from a process of its own: net/http
		// answering the 307 and nothing else, and no HTTP server at all
		// (a fixed 307 written for each request's end of headers).
		httpFloor, stop1 := floorProcess("net/http", cdirect)
		defer stop1()
		rawFloor, stop2 := floorProcess("raw", cdirect)
		defer stop2()
		m := inTurn("http://"+addr+"/acis/"+crel, "http://"+httpFloor+"/", "http://"+rawFloor+"/", cdirect)
		fmt.Printf("the same with each server in a process of its own (x: the store's, %s):\n", m[3].Round(time.Microsecond))
		fmt.Printf("  through the redirect of a replica (the nix2aci binary): %s\n", ratio(m[0], m[3]))
		fmt.Printf("  through net/http answering the same 307 and nothing else: %s\n", ratio(m[1], m[3]))
		fmt.Printf("  through a fixed 307 written to the socket, no HTTP server (the floor of this machine): %s\n", ratio(m[2], m[3]))
		fmt.Printf("  the redirect alone (307 from the replica process): %s; from the fixed 307: %s\n",
			redirectAlone("http://"+addr+"/acis/"+crel).Round(time.Microsecond), redirectAlone("http://"+rawFloor+"/").Round(time.Microsecond))
	}

	for _, c := range []struct {
		what  string
		hosts []string
	}{{"replica A alone", []string{a}}, {"replicas A and B in turn", []string{a, b}}} {
		fmt.Printf("discovery, %s, %d clients, %.0f s: %s\n", c.what, *clients, *seconds, benchnet.Discovery(client, c.hosts, *clients, *seconds))
	}
}

// dieWithUs makes a child of this program end with it, also when a
// failed check ends it without running its deferred stops.
var dieWithUs = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}

// floorEnv names the mode in which this program, started again by
// floorProcess, is a redirecting server and nothing else.
const floorEnv = "BENCH_SERVE_S3_FLOOR"

// redirect answers a 307 to u, as the server does.
func redirect(w http.ResponseWriter, u string) {
	h := w.Header()
	h["Location"] = []string{u}
	h["Content-Length"] = []string{"0"}
	w.WriteHeader(http.StatusTemporaryRedirect)
}

// floorProcess starts this program again as a server that answers every
// request with a 307 to u: through net/http ("net/http"), or by writing
// a fixed answer for each end of headers it reads ("raw"). It returns
// the server's address and how to stop it.
func floorProcess(mode, u string) (string, func()) {
	self, err := os.Executable()
	benchnet.Check(err)
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), floorEnv+"="+mode, floorEnv+"_TO="+u)
	cmd.SysProcAttr = dieWithUs
	out, err := cmd.StdoutPipe()
	benchnet.Check(err)
	cmd.Stderr = os.Stderr
	benchnet.Check(cmd.Start())
	var addr string
	if _, err := fmt.Fscanln(out, &addr); err != nil {
		log.Fatalf("the %s floor server did not start: %v", mode, err)
	}
	return addr, func() { cmd.Process.Kill(); cmd.Wait() }
}

// runFloor is the server floorProcess starts.
func runFloor(mode, u string) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	benchnet.Check(err)
	fmt.Println(l.Addr())
	if mode == "net/http" {
		log.Fatal(http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { redirect(w, u) })))
	}
	answer := []byte("HTTP/1.1 307 Temporary Redirect\r\nLocation: " + u + "\r\nContent-Length: 0\r\n\r\n")
	for {
		c, err := l.Accept()
		benchnet.Check(err)
		go func() {
			defer c.Close()
			buf := make([]byte, 16<<10)
			have := 0
			for {
				n, err := c.Read(buf[have:])
				if err != nil {
					return
				}
				have += n
				for {
					i := bytes.Index(buf[:have], []byte("\r\n\r\n"))
					if i < 0 {
						break
					}
					have = copy(buf, buf[i+4:have])
					if _, err := c.Write(answer); err != nil {
						return
					}
				}
				if have == len(buf) {
					return // headers this long are no GET of an image
				}
			}
		}()
	}
}

// freeAddr is a free loopback address.
func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	benchnet.Check(err)
	defer l.Close()
	return l.Addr().String()
}
