package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

// The pause between two dial attempts grows from firstRetryDelay to maxRetryDelay.
const (
	firstRetryDelay = 500 * time.Millisecond
	maxRetryDelay   = 5 * time.Second
)

// permanentError is a dial failure that another attempt cannot fix (a wrong host key, refused
// credentials): it is reported at once instead of being retried dialErrorLimit times.
type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

type hostKeyMismatch struct {
	address          string
	expected, served ssh.PublicKey
}

func (e hostKeyMismatch) Error() string {
	return fmt.Sprintf("host key mismatch for %s: the pinned hostKey is %s %s, the server offered %s %s; refusing to connect",
		e.address, e.expected.Type(), fingerprint(e.expected), e.served.Type(), fingerprint(e.served))
}

func fingerprint(key ssh.PublicKey) string {
	sum := sha256.Sum256(key.Marshal())
	return "SHA256:" + base64.RawStdEncoding.EncodeToString(sum[:])
}

// clientConfig is the SSH client configuration of c. Errors never quote a key or a password.
func (c *connection) clientConfig() (*ssh.ClientConfig, error) {
	config := &ssh.ClientConfig{User: c.user}
	if c.privateKey != nil {
		var signer ssh.Signer
		var err error
		if c.privateKeyPassword != nil {
			signer, err = ssh.ParsePrivateKeyWithPassphrase([]byte(c.privateKey.value), []byte(c.privateKeyPassword.value))
		} else {
			signer, err = ssh.ParsePrivateKey([]byte(c.privateKey.value))
		}
		if err != nil {
			var missing *ssh.PassphraseMissingError
			if errors.As(err, &missing) {
				return nil, errors.New("privateKey is encrypted: set privateKeyPassword")
			}
			return nil, fmt.Errorf("privateKey cannot be used: %s", keyError(err))
		}
		config.Auth = append(config.Auth, ssh.PublicKeys(signer))
	}
	if c.password != nil {
		password := c.password.value
		config.Auth = append(config.Auth, ssh.Password(password),
			ssh.KeyboardInteractive(func(_, _ string, questions []string, _ []bool) ([]string, error) {
				answers := make([]string, len(questions))
				for i := range answers {
					answers[i] = password
				}
				return answers, nil
			}))
	}
	socket := c.agentSocketPath
	if socket == "" {
		socket = os.Getenv("SSH_AUTH_SOCK")
	}
	if socket != "" {
		conn, err := net.Dial("unix", socket)
		if err != nil {
			return nil, fmt.Errorf("ssh agent at %s: %w", socket, err)
		}
		config.Auth = append(config.Auth, ssh.PublicKeysCallback(agent.NewClient(conn).Signers))
	}
	if c.hostKey == "" {
		// As pulumi-command documents: without a hostKey the server's key is not checked.
		config.HostKeyCallback = ssh.InsecureIgnoreHostKey() //nolint:gosec // documented behaviour
		return config, nil
	}
	pinned, _, _, _, err := ssh.ParseAuthorizedKey([]byte(c.hostKey))
	if err != nil {
		return nil, errors.New("hostKey is not an SSH public key")
	}
	// Ask the server for a key of the pinned type, so that a host with several keys offers that one.
	config.HostKeyAlgorithms = hostKeyAlgorithms(pinned)
	config.HostKeyCallback = func(_ string, _ net.Addr, served ssh.PublicKey) error {
		if bytes.Equal(served.Marshal(), pinned.Marshal()) {
			return nil
		}
		return hostKeyMismatch{address: c.address(), expected: pinned, served: served}
	}
	return config, nil
}

// keyError is the parser's complaint without anything of the key itself.
func keyError(err error) string {
	message := err.Error()
	if strings.Contains(message, "\n") || len(message) > 120 {
		return "not a private key this client can read"
	}
	return message
}

func hostKeyAlgorithms(key ssh.PublicKey) []string {
	if key.Type() == ssh.KeyAlgoRSA {
		return []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA}
	}
	return []string{key.Type()}
}

// dial opens an SSH connection to c, through its proxy if it has one, retrying failed attempts
// (at most dialErrorLimit of them, each given at most perDialTimeout seconds) within an overall
// budget of dialErrorLimit × perDialTimeout seconds, pauses between attempts included.
func (c *connection) dial(ctx context.Context) (*ssh.Client, error) {
	config, err := c.clientConfig()
	if err != nil {
		return nil, err
	}
	if c.proxy == nil {
		return withRetries(ctx, "dial "+c.address(), c.dialErrorLimit, c.perDialTimeout,
			func(ctx context.Context, timeout time.Duration) (*ssh.Client, error) {
				var dialer net.Dialer
				conn, err := dialer.DialContext(ctx, "tcp", c.address())
				if err != nil {
					return nil, err
				}
				return handshake(conn, c.address(), config, timeout)
			})
	}
	proxy, err := c.proxy.dial(ctx)
	if err != nil {
		return nil, fmt.Errorf("proxy %s: %w", c.proxy.address(), err)
	}
	client, err := withRetries(ctx, "dial "+c.address()+" through proxy "+c.proxy.address(), c.dialErrorLimit,
		c.perDialTimeout, func(ctx context.Context, timeout time.Duration) (*ssh.Client, error) {
			conn, err := proxy.DialContext(ctx, "tcp", c.address())
			if err != nil {
				return nil, err
			}
			return handshake(conn, c.address(), config, timeout)
		})
	if err != nil {
		proxy.Close()
		return nil, err
	}
	// The proxy's connection lives as long as the one through it.
	go func() {
		_ = client.Wait()
		proxy.Close()
	}()
	return client, nil
}

// handshake runs the SSH handshake on conn within timeout (0: no limit): a host that accepts TCP but
// never answers must not hold a dial forever.
func handshake(conn net.Conn, address string, config *ssh.ClientConfig, timeout time.Duration) (*ssh.Client, error) {
	if timeout > 0 {
		_ = conn.SetDeadline(time.Now().Add(timeout))
	}
	sshConn, channels, requests, err := ssh.NewClientConn(conn, address, config)
	if err != nil {
		conn.Close()
		var mismatch hostKeyMismatch
		if errors.As(err, &mismatch) {
			return nil, permanentError{mismatch}
		}
		if strings.Contains(err.Error(), "unable to authenticate") {
			return nil, permanentError{fmt.Errorf("%s refused the credentials (user %q): %w", address, config.User, err)}
		}
		return nil, err
	}
	_ = conn.SetDeadline(time.Time{})
	return ssh.NewClient(sshConn, channels, requests), nil
}

// withRetries calls attempt until it succeeds, fails permanently, fails `limit` times (-1: no limit)
// or the budget of limit × perDial seconds is spent (no budget when either is unlimited).
func withRetries[T any](
	ctx context.Context, what string, limit, perDial int, attempt func(context.Context, time.Duration) (T, error),
) (T, error) {
	var zero T
	perAttempt := time.Duration(perDial) * time.Second
	var deadline time.Time
	if limit > 0 && perDial > 0 {
		deadline = time.Now().Add(time.Duration(limit) * perAttempt)
	}
	remaining := func() time.Duration {
		if deadline.IsZero() {
			return time.Duration(1<<63 - 1)
		}
		return time.Until(deadline)
	}
	delay := firstRetryDelay
	var last error
	for try := 1; ; try++ {
		timeout := perAttempt // 0: no limit
		if !deadline.IsZero() {
			if remaining() <= 0 {
				return zero, fmt.Errorf("%s: no connection within %d × %ds (%d attempts), the last failed with: %w",
					what, limit, perDial, try-1, last)
			}
			timeout = min(timeout, remaining())
		}
		attemptCtx, cancel := ctx, context.CancelFunc(func() {})
		if timeout > 0 {
			attemptCtx, cancel = context.WithTimeout(ctx, timeout)
		}
		value, err := attempt(attemptCtx, timeout)
		cancel()
		if err == nil {
			return value, nil
		}
		last = err
		var permanent permanentError
		switch {
		case errors.As(err, &permanent):
			return zero, permanent.err
		case ctx.Err() != nil:
			return zero, fmt.Errorf("%s: cancelled", what)
		case limit > 0 && try >= limit:
			return zero, fmt.Errorf("%s: %d attempts failed, the last with: %w", what, try, err)
		}
		pause := min(delay, remaining())
		select {
		case <-ctx.Done():
			return zero, fmt.Errorf("%s: cancelled", what)
		case <-time.After(pause):
		}
		delay = min(2*delay, maxRetryDelay)
	}
}
