// Package objstoretest starts a real S3-compatible server for tests:
// Versity's S3 gateway (versitygw v1.8.0) over a temporary directory, on
// loopback, with real signature checks. scripts/setup-test installs it.
package objstoretest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/nix2aci/nix2aci/internal/testsupport"
	"github.com/nix2aci/nix2aci/objstore"
)

// Credentials of the gateway's root account.
const (
	AccessKey = "nix2acitest"
	SecretKey = "nix2aci-test-secret-key"
)

// Gateway is a running versitygw.
type Gateway struct {
	Endpoint string // http://127.0.0.1:PORT
	Addr     string // 127.0.0.1:PORT
	Dir      string // its posix root: buckets are directories in it
	cmd      *exec.Cmd
}

// Binary finds versitygw: on PATH, in /usr/local/bin (where scripts/setup-test
// puts it), or in Go's bin directory.
func Binary() (string, error) {
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p, nil
	}
	cands := []string{"/usr/local/bin/versitygw"}
	if out, err := exec.Command("go", "env", "GOBIN", "GOPATH").Output(); err == nil {
		for _, d := range strings.Fields(string(out)) {
			cands = append(cands, filepath.Join(d, "versitygw"), filepath.Join(d, "bin", "versitygw"))
		}
	}
	for _, c := range cands {
		if fi, err := os.Stat(c); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return c, nil
		}
	}
	return "", fmt.Errorf("versitygw (Versity's S3 gateway v1.8.0) is not on PATH, in /usr/local/bin nor in Go's bin directory: run scripts/setup-test")
}

// Start starts a gateway on a free loopback port; it is stopped when the
// test ends. A test that cannot start one fails.
func Start(t testing.TB) *Gateway {
	t.Helper()
	g, err := Launch(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Stop)
	return g
}

// Launch starts a gateway over dir on a free loopback port; Stop it.
func Launch(dir string) (*Gateway, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	g := &Gateway{Dir: filepath.Join(dir, "s3")}
	if err := os.MkdirAll(g.Dir, 0o755); err != nil {
		return nil, err
	}
	if g.Addr, err = testsupport.FreeAddrOn("127.0.0.1"); err != nil {
		return nil, err
	}
	g.Endpoint = "http://" + g.Addr
	g.cmd = exec.Command(bin, "--port", g.Addr, "--quiet", "posix", g.Dir)
	g.cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY="+AccessKey, "ROOT_SECRET_KEY="+SecretKey)
	// It ends with the process that started it, even one that dies
	// without stopping it.
	g.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out := testsupport.LockedBuffer{Max: 1 << 20}
	g.cmd.Stdout, g.cmd.Stderr = &out, &out
	if err := g.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %v", bin, err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		c, err := net.DialTimeout("tcp", g.Addr, time.Second)
		if err == nil {
			c.Close()
			return g, nil
		}
		if time.Now().After(deadline) {
			g.Stop()
			return nil, fmt.Errorf("versitygw did not listen on %s within 30 s:\n%s", g.Addr, out.String())
		}
	}
}

// Stop kills the gateway.
func (g *Gateway) Stop() {
	g.cmd.Process.Kill()
	g.cmd.Wait()
}

// Config is an aws.Config with the gateway's root credentials.
func (g *Gateway) Config() aws.Config {
	return aws.Config{Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider(AccessKey, SecretKey, "")}
}

// Bucket creates a bucket and returns a store on it.
func (g *Gateway) Bucket(t testing.TB, name string, o objstore.S3Options) *objstore.S3 {
	t.Helper()
	st, err := g.CreateBucket(name, o)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// CreateBucket creates a bucket and returns a store on it.
func (g *Gateway) CreateBucket(name string, o objstore.S3Options) (*objstore.S3, error) {
	c := s3.NewFromConfig(g.Config(), func(so *s3.Options) {
		so.BaseEndpoint = aws.String(g.Endpoint)
		so.UsePathStyle = true
	})
	if _, err := c.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String(name)}); err != nil {
		return nil, fmt.Errorf("creating the bucket %s: %v", name, err)
	}
	o.Endpoint, o.Bucket, o.PathStyle = g.Endpoint, name, true
	return objstore.NewS3(g.Config(), o)
}
