package main

import (
	"bufio"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// sshdPath is OpenSSH's server (Debian's openssh-server; run-tests.sh installs it).
const sshdPath = "/usr/sbin/sshd"

// testServer is a real sshd started by a test on 127.0.0.1, with a host key and a client key of its own.
type testServer struct {
	port       int
	hostKey    string // authorized_keys form, as a stack pins it
	clientKey  string // OpenSSH private key (PEM)
	user       string
	log        string // sshd's log file
	dir        string
	clientPair ed25519.PrivateKey
}

type sshdOption func(config *strings.Builder)

// acceptEnv lets the server take these environment variables from clients (sshd's AcceptEnv).
func acceptEnv(names ...string) sshdOption {
	return func(config *strings.Builder) { fmt.Fprintf(config, "AcceptEnv %s\n", strings.Join(names, " ")) }
}

func startSSHD(t *testing.T, options ...sshdOption) *testServer {
	t.Helper()
	if _, err := os.Stat(sshdPath); err != nil {
		t.Fatalf("these tests start a real sshd: install openssh-server (%v)", err)
	}
	if os.Geteuid() != 0 {
		t.Fatalf("these tests start sshd, which needs root (run them as root, as run-tests.sh does)")
	}
	// sshd's privilege separation directory.
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	hostKeyFile := filepath.Join(dir, "host_ed25519")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", hostKeyFile).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v: %s", err, out)
	}
	hostPub, err := os.ReadFile(hostKeyFile + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	client, clientPEM := newClientKey(t)
	authorized := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(authorized, []byte(authorizedLine(t, client)), 0o600); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	var config strings.Builder
	fmt.Fprintf(&config, "ListenAddress 127.0.0.1\nPort %d\nHostKey %s\nAuthorizedKeysFile %s\n", port, hostKeyFile, authorized)
	config.WriteString("StrictModes no\nUsePAM no\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n" +
		"KbdInteractiveAuthentication no\nPidFile none\nLogLevel DEBUG1\nAllowTcpForwarding yes\n" +
		"Subsystem sftp internal-sftp\nMaxStartups 100\n")
	for _, option := range options {
		option(&config)
	}
	configFile := filepath.Join(dir, "sshd_config")
	if err := os.WriteFile(configFile, []byte(config.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	logFile := filepath.Join(dir, "sshd.log")
	server := exec.Command(sshdPath, "-D", "-f", configFile, "-E", logFile)
	if out, err := exec.Command(sshdPath, "-t", "-f", configFile).CombinedOutput(); err != nil {
		t.Fatalf("sshd -t: %v: %s", err, out)
	}
	if err := server.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = server.Process.Kill()
		_ = server.Wait()
	})
	waitForBanner(t, port)
	return &testServer{
		port:       port,
		hostKey:    strings.TrimSpace(string(hostPub)),
		clientKey:  clientPEM,
		user:       currentUser(t),
		log:        logFile,
		dir:        dir,
		clientPair: client,
	}
}

// newClientKey is an ed25519 key pair and its private key in OpenSSH's PEM form.
func newClientKey(t *testing.T) (ed25519.PrivateKey, string) {
	t.Helper()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(key, "provider test")
	if err != nil {
		t.Fatal(err)
	}
	return key, string(pem.EncodeToMemory(block))
}

func authorizedLine(t *testing.T, key ed25519.PrivateKey) string {
	t.Helper()
	signer, err := ssh.NewSignerFromKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return string(ssh.MarshalAuthorizedKey(signer.PublicKey()))
}

// publicKeyLine is the authorized_keys line of a server's client key.
func publicKeyLine(t *testing.T, s *testServer) string { return authorizedLine(t, s.clientPair) }

func currentUser(t *testing.T) string {
	out, err := exec.Command("id", "-un").Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}

func freePort(t *testing.T) int {
	t.Helper()
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer listener.Close()
	return listener.Addr().(*net.TCPAddr).Port
}

func waitForBanner(t *testing.T, port int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err == nil {
			_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
			line, _ := bufio.NewReader(conn).ReadString('\n')
			conn.Close()
			if strings.HasPrefix(line, "SSH-2.0-") {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("sshd on port %d did not answer", port)
}

// logText is what sshd has logged so far.
func (s *testServer) logText(t *testing.T) string {
	data, err := os.ReadFile(s.log)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}
