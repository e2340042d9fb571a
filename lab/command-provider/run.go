package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"
)

// errorOutputLines bounds the command output quoted in an error message.
const errorOutputLines = 200

// localKillDelay: after a cancelled local command got SIGTERM, how long it has before SIGKILL.
const localKillDelay = 5 * time.Second

// outputs are what a command leaves in the resource's state.
type outputs struct {
	stdout, stderr string
}

// logSink receives the lines of a command's output that its logging mode lets through.
type logSink func(line string)

// lineWriter cuts a stream into lines for a logSink; stdout and stderr each have their own.
type lineWriter struct {
	mu      *sync.Mutex
	sink    logSink
	partial []byte
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.partial = append(w.partial, p...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			break
		}
		w.sink(string(w.partial[:i]))
		w.partial = w.partial[i+1:]
	}
	return len(p), nil
}

func (w *lineWriter) flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.partial) > 0 {
		w.sink(string(w.partial))
		w.partial = nil
	}
}

// capture collects a command's stdout and stderr, passes the logged streams to the sink line by line,
// and keeps the logged output, in order, for an error message.
type capture struct {
	stdout, stderr bytes.Buffer
	logged         bytes.Buffer
	mu             sync.Mutex
	writers        []*lineWriter
}

func newCapture(mode string, sink logSink) (*capture, [2]*teeWriter) {
	c := &capture{}
	record := func(line string) {
		c.logged.WriteString(line + "\n")
		if sink != nil {
			sink(line)
		}
	}
	lines := func(logged bool) *lineWriter {
		if !logged {
			return nil
		}
		w := &lineWriter{mu: &c.mu, sink: record}
		c.writers = append(c.writers, w)
		return w
	}
	logStdout := mode == logStdout || mode == logStdoutAndStderr
	logStderr := mode == logStderr || mode == logStdoutAndStderr
	return c, [2]*teeWriter{{&c.stdout, lines(logStdout), &c.mu}, {&c.stderr, lines(logStderr), &c.mu}}
}

func (c *capture) finish() outputs {
	for _, w := range c.writers {
		w.flush()
	}
	// Like pulumi-command: one trailing newline is not part of the output.
	return outputs{
		stdout: strings.TrimSuffix(c.stdout.String(), "\n"),
		stderr: strings.TrimSuffix(c.stderr.String(), "\n"),
	}
}

// teeWriter writes to its buffer and, for a logged stream, to its line writer.
type teeWriter struct {
	buffer *bytes.Buffer
	lines  *lineWriter
	mu     *sync.Mutex
}

func (t *teeWriter) Write(p []byte) (int, error) {
	t.mu.Lock()
	t.buffer.Write(p)
	t.mu.Unlock()
	if t.lines != nil {
		return t.lines.Write(p)
	}
	return len(p), nil
}

// commandError is what a failed command reports: pulumi-command's form ("<status>: running <command>:"
// then the output), but only with the streams the logging mode logs (a command whose stdout is a
// secret runs with logging "none" and so shows nothing of it), at most errorOutputLines of them, and
// never a command that was a secret.
func commandError(status string, cmd *text, c *capture) error {
	shown := fmt.Sprintf("%q", cmd.value)
	if cmd.secret {
		shown = "[secret]"
	}
	lines := strings.Split(strings.TrimSuffix(c.logged.String(), "\n"), "\n")
	if len(lines) > errorOutputLines {
		lines = append([]string{fmt.Sprintf("[%d earlier lines left out]", len(lines)-errorOutputLines)},
			lines[len(lines)-errorOutputLines:]...)
	}
	return fmt.Errorf("%s: running %s:\n%s", status, shown, strings.Join(lines, "\n"))
}

// previous are the outputs of the last create/update, offered as PULUMI_COMMAND_STDOUT/STDERR.
type previous = outputs

// runRemote runs cmd on the command's host over one SSH session.
func runRemote(ctx context.Context, c *command, cmd *text, prev *previous, warn func(string), sink logSink) (outputs, error) {
	client, err := c.connection.dial(ctx)
	if err != nil {
		return outputs{}, err
	}
	defer client.Close()
	// Cancel (or the engine giving up) closes the connection, which ends the session.
	stop := context.AfterFunc(ctx, func() { client.Close() })
	defer stop()

	session, err := client.NewSession()
	if err != nil {
		return outputs{}, fmt.Errorf("%s: cannot open a session: %w", c.connection.address(), err)
	}
	defer session.Close()
	for _, key := range sortedKeys(c.environment) {
		if err := session.Setenv(key, c.environment[key]); err != nil {
			return outputs{}, fmt.Errorf("could not set environment variable %q: the SSH server refused it "+
				"(it accepts only the variables its AcceptEnv lists); prefix the command with VAR=value instead", key)
		}
	}
	if prev != nil && c.addPreviousOutputInEnv {
		for key, value := range map[string]string{"PULUMI_COMMAND_STDOUT": prev.stdout, "PULUMI_COMMAND_STDERR": prev.stderr} {
			if value == "" {
				continue
			}
			if err := session.Setenv(key, value); err != nil {
				warn(fmt.Sprintf("Unable to set '%s': the SSH server accepts only the variables its AcceptEnv lists "+
					"(set addPreviousOutputInEnv to false if the command does not read it)", key))
			}
		}
	}
	if c.stdin != nil && c.stdin.value != "" {
		session.Stdin = strings.NewReader(c.stdin.value)
	}
	out, writers := newCapture(c.logging, sink)
	session.Stdout, session.Stderr = writers[0], writers[1]
	err = session.Run(cmd.value)
	result := out.finish()
	if err == nil {
		return result, nil
	}
	if ctx.Err() != nil {
		return outputs{}, fmt.Errorf("cancelled while running on %s", c.connection.address())
	}
	var exit *ssh.ExitError
	var missing *ssh.ExitMissingError
	switch {
	case errors.As(err, &exit) && exit.Signal() != "":
		return outputs{}, commandError(fmt.Sprintf("Process ended by signal %s", exit.Signal()), cmd, out)
	case errors.As(err, &exit):
		return outputs{}, commandError(fmt.Sprintf("Process exited with status %d", exit.ExitStatus()), cmd, out)
	case errors.As(err, &missing):
		return outputs{}, commandError("The connection ended before the command reported an exit status", cmd, out)
	default:
		return outputs{}, commandError(fmt.Sprintf("Running the command failed (%v)", err), cmd, out)
	}
}

// runLocal runs cmd on the machine that runs Pulumi, with the interpreter (default /bin/sh -c).
func runLocal(ctx context.Context, c *command, cmd *text, prev *previous, sink logSink) (outputs, error) {
	argv := append([]string{}, c.interpreter...)
	if len(argv) == 0 {
		argv = []string{"/bin/sh", "-c"}
	}
	argv = append(argv, cmd.value)
	process := exec.CommandContext(ctx, argv[0], argv[1:]...)
	process.Dir = c.dir
	process.Env = os.Environ()
	for _, key := range sortedKeys(c.environment) {
		process.Env = append(process.Env, key+"="+c.environment[key])
	}
	if prev != nil && c.addPreviousOutputInEnv {
		if prev.stdout != "" {
			process.Env = append(process.Env, "PULUMI_COMMAND_STDOUT="+prev.stdout)
		}
		if prev.stderr != "" {
			process.Env = append(process.Env, "PULUMI_COMMAND_STDERR="+prev.stderr)
		}
	}
	if c.stdin != nil && c.stdin.value != "" {
		process.Stdin = strings.NewReader(c.stdin.value)
	}
	// Its own process group, so that a cancel reaches what the command started too.
	process.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	process.Cancel = func() error { return syscall.Kill(-process.Process.Pid, syscall.SIGTERM) }
	process.WaitDelay = localKillDelay
	out, writers := newCapture(c.logging, sink)
	process.Stdout, process.Stderr = writers[0], writers[1]
	err := process.Run()
	result := out.finish()
	if err == nil {
		return result, nil
	}
	if ctx.Err() != nil {
		return outputs{}, errors.New("cancelled while running locally")
	}
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		if status, ok := exit.Sys().(syscall.WaitStatus); ok && status.Signaled() {
			return outputs{}, commandError(fmt.Sprintf("Process ended by signal %s", status.Signal()), cmd, out)
		}
		return outputs{}, commandError(fmt.Sprintf("Process exited with status %d", exit.ExitCode()), cmd, out)
	}
	return outputs{}, commandError(fmt.Sprintf("Could not start %s (%v)", argv[0], err), cmd, out)
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	return sorted(keys)
}
