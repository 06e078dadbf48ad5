package main

import (
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/nix2aci/nix2aci/internal/testsupport"
)

// serveProc is a `nix2aci serve` a test started, in a process group of
// its own.
type serveProc struct {
	cmd    *exec.Cmd
	addr   string // its loopback address
	label  string // the version label it serves
	stderr *testsupport.LockedBuffer
	done   chan struct{} // closed once serve has ended
	err    error         // how it ended, once done is closed
}

// startServe starts bin serve on a free loopback address, with the prefix
// 127.0.0.1, the base URL http://ADDR/acis and then args; edit, if not
// nil, sets the command's environment or directory first. It returns once
// serve logs how to fetch from it, with the version label read from that
// line. The process group is killed when the test ends, if not before.
func startServe(t *testing.T, bin string, edit func(*exec.Cmd), args ...string) *serveProc {
	t.Helper()
	p := &serveProc{addr: testsupport.FreeAddr(t), stderr: &testsupport.LockedBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(bin, append([]string{"serve", "--listen", p.addr, "--prefix", "127.0.0.1", "--base-url", "http://" + p.addr + "/acis"}, args...)...)
	p.cmd.Stderr = p.stderr
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if edit != nil {
		edit(p.cmd)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(p.kill)
	waitFor(t, func() bool { return strings.Contains(p.stderr.String(), "rkt fetch") })
	s := p.stderr.String()
	fmt.Sscanf(s[strings.Index(s, "version "):], "version %s", &p.label)
	return p
}

// kill kills serve, with the Nix it runs (its process group), unless it
// has ended, and waits for it.
func (p *serveProc) kill() {
	select {
	case <-p.done:
	default:
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	}
	<-p.done
}

// url is where serve answers for the image name (its prefix included),
// for linux/amd64.
func (p *serveProc) url(name string) string {
	return fmt.Sprintf("http://%s/acis/%s-%s-linux-amd64.aci", p.addr, name, p.label)
}
