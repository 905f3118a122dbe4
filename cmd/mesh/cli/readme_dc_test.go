//go:build unix

package cli_test

import (
	"bufio"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshgit/mesh/internal/testutil"
)

// TestReadmeTwoDatacenters runs the README's two-datacenter walkthrough as written (its
// mesh.cue, then each command of its sh block with bash, the ones ending in & as background
// processes), so that the README stays true. Only the port numbers are replaced, consistently,
// by free ones (the tests of other packages run alongside). Commands that ask a server
// something are repeated until they succeed (servers and proxies take a moment); the last
// ones must show web reaching api in dc2 through both gateways, and dc2's api through dc1.
func TestReadmeTwoDatacenters(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	section := string(b)
	i := strings.Index(section, "\n## Two datacenters\n")
	if i < 0 {
		t.Fatal("README.md has no section Two datacenters")
	}
	section = section[i:]
	section = section[:strings.Index(section[1:], "\n## ")+1]
	cue, sh := codeBlock(t, section, "cue"), codeBlock(t, section, "sh")

	// Every port the walkthrough names, replaced by a free one.
	ports := map[string]string{}
	re := regexp.MustCompile(`\b(8[0-9]{3}|9[0-9]{3}|21000)\b`)
	var named []string
	for _, p := range re.FindAllString(cue+sh, -1) {
		if ports[p] == "" {
			ports[p] = "?"
			named = append(named, p)
		}
	}
	for i, a := range testutil.FreeAddrs(t, len(named)) { // distinct
		_, ports[named[i]], _ = net.SplitHostPort(a)
	}
	remap := func(s string) string { return re.ReplaceAllStringFunc(s, func(p string) string { return ports[p] }) }

	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "mesh.cue"), []byte(remap(cue)), 0o644); err != nil {
		t.Fatal(err)
	}
	testutil.Git(t, dir, "init", "-q", "-b", "main")
	testutil.Git(t, dir, "add", "-A")
	testutil.Git(t, dir, "commit", "-q", "-m", "two datacenters")
	echoServer(t, "127.0.0.1:"+ports["9090"])

	for _, line := range shellLines(sh) {
		cmd, _, _ := strings.Cut(line, " #")
		cmd = remap(strings.TrimSpace(cmd))
		switch {
		case strings.HasSuffix(cmd, "&"):
			startShell(t, dir, strings.TrimSuffix(cmd, "&"))
		case strings.HasPrefix(cmd, "nc "):
			ncRoundTrip(t, dir, cmd, "hello across datacenters")
		default:
			want := ""
			switch {
			case strings.Contains(cmd, "jq .federation"):
				want = `"state": "connected"`
			case strings.Contains(cmd, "?dc=dc2"):
				want = `"Datacenter":"dc2"`
			}
			retryShell(t, dir, cmd, want)
		}
	}
}

// codeBlock returns the body of the first ```lang block of s.
func codeBlock(t *testing.T, s, lang string) string {
	t.Helper()
	_, rest, ok := strings.Cut(s, "```"+lang+"\n")
	if !ok {
		t.Fatalf("no %s block", lang)
	}
	body, _, _ := strings.Cut(rest, "```")
	return body
}

// shellLines joins continued lines (a trailing backslash, an open single quote) and drops
// comment lines.
func shellLines(sh string) []string {
	var out []string
	cur := ""
	for _, l := range strings.Split(sh, "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "#") && cur == "" || strings.TrimSpace(l) == "" && cur == "" {
			continue
		}
		if strings.HasSuffix(l, "\\") {
			cur += strings.TrimSuffix(l, "\\") + " "
			continue
		}
		if strings.Count(cur+l, "'")%2 == 1 { // a quoted newline
			cur += l + "\n"
			continue
		}
		out = append(out, cur+l)
		cur = ""
	}
	return out
}

func shell(dir, cmd string) *exec.Cmd {
	c := exec.Command("bash", "-o", "pipefail", "-c", cmd)
	c.Dir = dir
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return c
}

// startShell runs cmd in the background until the test ends.
func startShell(t *testing.T, dir, cmd string) {
	t.Helper()
	out := &testutil.SyncBuffer{}
	c := shell(dir, cmd)
	c.Stdout, c.Stderr = out, out
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { c.Wait(); close(done) }()
	t.Cleanup(func() {
		syscall.Kill(-c.Process.Pid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
			<-done
		}
		if t.Failed() {
			t.Logf("output of %s:\n%s", cmd, out.String())
		}
	})
}

// retryShell runs cmd until it exits 0 with want in its output, for at most 30 s.
func retryShell(t *testing.T, dir, cmd, want string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := shell(dir, cmd).CombinedOutput()
		if err == nil && strings.Contains(string(out), want) && !strings.Contains(string(out), `"error"`) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v\n%s", cmd, err, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// ncRoundTrip runs cmd (nc HOST PORT) with payload on its stdin until its output echoes it back,
// for at most 30 s.
func ncRoundTrip(t *testing.T, dir, cmd, payload string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		c := shell(dir, cmd)
		c.Stdin = strings.NewReader(payload + "\n")
		stdout, _ := c.StdoutPipe()
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		got := make(chan string, 1)
		go func() {
			line, _ := bufio.NewReader(stdout).ReadString('\n')
			got <- line
			io.Copy(io.Discard, stdout)
		}()
		select {
		case last = <-got:
		case <-time.After(3 * time.Second):
		}
		syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
		c.Wait()
		if strings.TrimSpace(last) == payload {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%s: got %q, want %q echoed by api in dc2", cmd, last, payload)
}

// echoServer is api's application: it echoes every connection.
func echoServer(t *testing.T, addr string) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
}
