package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/archive"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/asset"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/protobuf/types/known/structpb"
)

// --- a harness that drives the provider as the engine does: Check, then Diff/Create/Update/Delete ---

type logEntry struct {
	severity  pulumirpc.LogSeverity
	urn       string
	message   string
	ephemeral bool
}

type harness struct {
	t    *testing.T
	p    *provider
	mu   sync.Mutex
	logs []logEntry
}

func newHarness(t *testing.T) *harness {
	h := &harness{t: t}
	h.p = newProvider(func(_ context.Context, severity pulumirpc.LogSeverity, urn, message string, ephemeral bool) {
		h.mu.Lock()
		defer h.mu.Unlock()
		h.logs = append(h.logs, logEntry{severity, urn, message, ephemeral})
	})
	return h
}

func urnOf(typ, name string) string {
	return fmt.Sprintf("urn:pulumi:test::k3s-cilium::%s::%s", typ, name)
}

// loggedLines are the status lines logged for one resource.
func (h *harness) loggedLines(typ, name string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var lines []string
	for _, entry := range h.logs {
		if entry.urn == urnOf(typ, name) && entry.ephemeral {
			lines = append(lines, entry.message)
		}
	}
	return lines
}

func (h *harness) check(typ string, inputs resource.PropertyMap) (resource.PropertyMap, []*pulumirpc.CheckFailure) {
	h.t.Helper()
	news, err := marshal(inputs)
	if err != nil {
		h.t.Fatal(err)
	}
	resp, err := h.p.Check(context.Background(), &pulumirpc.CheckRequest{Urn: urnOf(typ, "x"), Type: typ, News: news})
	if err != nil {
		h.t.Fatal(err)
	}
	checked, err := unmarshal(resp.GetInputs())
	if err != nil {
		h.t.Fatal(err)
	}
	return checked, resp.GetFailures()
}

func (h *harness) checked(typ string, inputs resource.PropertyMap) resource.PropertyMap {
	h.t.Helper()
	checked, failures := h.check(typ, inputs)
	if len(failures) > 0 {
		h.t.Fatalf("check failed: %v", failures)
	}
	return checked
}

func (h *harness) create(typ, name string, inputs resource.PropertyMap, preview bool) (string, resource.PropertyMap, error) {
	h.t.Helper()
	props, err := marshal(h.checked(typ, inputs))
	if err != nil {
		h.t.Fatal(err)
	}
	resp, err := h.p.Create(context.Background(), &pulumirpc.CreateRequest{
		Urn: urnOf(typ, name), Type: typ, Name: name, Properties: props, Preview: preview,
	})
	if err != nil {
		return "", nil, err
	}
	state, err := unmarshal(resp.GetProperties())
	if err != nil {
		h.t.Fatal(err)
	}
	return resp.GetId(), state, nil
}

func (h *harness) mustCreate(typ, name string, inputs resource.PropertyMap) resource.PropertyMap {
	h.t.Helper()
	_, state, err := h.create(typ, name, inputs, false)
	if err != nil {
		h.t.Fatalf("create %s: %v", name, err)
	}
	return state
}

// oldAndNew: a resource's last state and its new inputs (checked as the engine would) on the wire.
func (h *harness) oldAndNew(typ string, olds, inputs resource.PropertyMap) (*structpb.Struct, *structpb.Struct) {
	h.t.Helper()
	oldProps, err := marshal(olds)
	if err != nil {
		h.t.Fatal(err)
	}
	newProps, err := marshal(h.checked(typ, inputs))
	if err != nil {
		h.t.Fatal(err)
	}
	return oldProps, newProps
}

func (h *harness) update(typ, name string, olds, inputs resource.PropertyMap, preview bool) (resource.PropertyMap, error) {
	h.t.Helper()
	oldProps, newProps := h.oldAndNew(typ, olds, inputs)
	resp, err := h.p.Update(context.Background(), &pulumirpc.UpdateRequest{
		Urn: urnOf(typ, name), Type: typ, Name: name, Id: name + "0000", Olds: oldProps, News: newProps, Preview: preview,
	})
	if err != nil {
		return nil, err
	}
	state, err := unmarshal(resp.GetProperties())
	if err != nil {
		h.t.Fatal(err)
	}
	return state, nil
}

func (h *harness) delete(typ, name string, state resource.PropertyMap) error {
	h.t.Helper()
	props, err := marshal(state)
	if err != nil {
		h.t.Fatal(err)
	}
	_, err = h.p.Delete(context.Background(), &pulumirpc.DeleteRequest{Urn: urnOf(typ, name), Type: typ, Id: name, Properties: props})
	return err
}

func (h *harness) diff(typ string, olds, inputs resource.PropertyMap) *pulumirpc.DiffResponse {
	h.t.Helper()
	oldProps, newProps := h.oldAndNew(typ, olds, inputs)
	resp, err := h.p.Diff(context.Background(), &pulumirpc.DiffRequest{Urn: urnOf(typ, "x"), Type: typ, Olds: oldProps, News: newProps})
	if err != nil {
		h.t.Fatal(err)
	}
	return resp
}

// --- inputs as the Python SDK sends them (the connection is always a secret) ---

type props = map[string]any

func secret(v any) resource.PropertyValue { return resource.MakeSecret(resource.NewPropertyValue(v)) }

func (s *testServer) connection(extra props) resource.PropertyValue {
	c := props{"host": "127.0.0.1", "port": float64(s.port), "user": s.user, "privateKey": s.clientKey, "hostKey": s.hostKey}
	for k, v := range extra {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return secret(c)
}

func remoteInputs(conn resource.PropertyValue, fields props) resource.PropertyMap {
	m := resource.NewPropertyMapFromMap(fields)
	m["connection"] = conn
	return m
}

func stringOf(t *testing.T, state resource.PropertyMap, key string) string {
	t.Helper()
	v := unsecret(state[resource.PropertyKey(key)])
	if !v.IsString() {
		t.Fatalf("%s is not a string: %v", key, v)
	}
	return v.StringValue()
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// --- remote.Command -----------------------------------------------------------------------------------

func TestRemoteCreateUpdateDeleteRunTheirCommands(t *testing.T) {
	server := startSSHD(t)
	h := newHarness(t)
	dir := t.TempDir()
	log := filepath.Join(dir, "log")
	inputs := func(create, update string) resource.PropertyMap {
		fields := props{"create": create, "delete": "echo delete >> " + log, "addPreviousOutputInEnv": false}
		if update != "" {
			fields["update"] = update
		}
		return remoteInputs(server.connection(nil), fields)
	}

	state := h.mustCreate(typeRemoteCommand, "cmd", inputs("echo create >> "+log+"; echo created; echo warned >&2", ""))
	if got := stringOf(t, state, "stdout"); got != "created" {
		t.Fatalf("stdout = %q", got)
	}
	if got := stringOf(t, state, "stderr"); got != "warned" {
		t.Fatalf("stderr = %q", got)
	}
	// Without `update`, a changed input runs `create` again.
	state, err := h.update(typeRemoteCommand, "cmd", state, inputs("echo create-again >> "+log, ""), false)
	if err != nil {
		t.Fatal(err)
	}
	// With `update`, the update runs.
	state, err = h.update(typeRemoteCommand, "cmd", state, inputs("echo never >> "+log, "echo update >> "+log), false)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.delete(typeRemoteCommand, "cmd", state); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, log); got != "create\ncreate-again\nupdate\ndelete\n" {
		t.Fatalf("commands ran as %q", got)
	}
}

func TestRemoteCommandWithoutCreateRunsNothingAndFailedCommandsNameTheStatus(t *testing.T) {
	server := startSSHD(t)
	h := newHarness(t)
	state := h.mustCreate(typeRemoteCommand, "quiet", remoteInputs(server.connection(nil), props{}))
	if stringOf(t, state, "stdout") != "" || stringOf(t, state, "stderr") != "" {
		t.Fatalf("outputs of a command without create: %v", state)
	}
	_, _, err := h.create(typeRemoteCommand, "failing", remoteInputs(server.connection(nil), props{
		"create": "echo step one; echo 'the reason it failed' >&2; exit 3",
	}), false)
	if err == nil {
		t.Fatal("a failing command created its resource")
	}
	for _, want := range []string{"Process exited with status 3", `running "echo step one;`, "step one", "the reason it failed"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

func TestStdinReachesTheCommandAndAPreviousOutputIsOffered(t *testing.T) {
	server := startSSHD(t, acceptEnv("PULUMI_COMMAND_STDOUT", "PULUMI_COMMAND_STDERR"))
	h := newHarness(t)
	inputs := remoteInputs(server.connection(nil), props{"create": "cat; echo; echo \"previous=$PULUMI_COMMAND_STDOUT\""})
	inputs["stdin"] = secret("line one\nline two")
	state := h.mustCreate(typeRemoteCommand, "stdin", inputs)
	if got := stringOf(t, state, "stdout"); got != "line one\nline two\nprevious=" {
		t.Fatalf("stdout = %q", got)
	}
	// The state keeps stdin a secret.
	if !state["stdin"].IsSecret() {
		t.Fatal("stdin lost its secrecy in the state")
	}
	inputs["create"] = resource.NewProperty("echo \"previous=$PULUMI_COMMAND_STDOUT\"")
	state, err := h.update(typeRemoteCommand, "stdin", state, inputs, false)
	if err != nil {
		t.Fatal(err)
	}
	if got := stringOf(t, state, "stdout"); got != "previous=line one\nline two\nprevious=" {
		t.Fatalf("PULUMI_COMMAND_STDOUT was %q", got)
	}
}

func TestEnvironmentAcceptedByTheServerReachesTheCommandAndARefusedOneFails(t *testing.T) {
	server := startSSHD(t, acceptEnv("LAB_GREETING"))
	h := newHarness(t)
	inputs := remoteInputs(server.connection(nil), props{
		"create": "echo \"$LAB_GREETING\"", "environment": props{"LAB_GREETING": "hello from the provider"},
	})
	state := h.mustCreate(typeRemoteCommand, "env", inputs)
	if got := stringOf(t, state, "stdout"); got != "hello from the provider" {
		t.Fatalf("stdout = %q", got)
	}
	inputs["environment"] = resource.NewProperty(resource.NewPropertyMapFromMap(props{"NOT_ACCEPTED": "x"}))
	_, _, err := h.create(typeRemoteCommand, "env-refused", inputs, false)
	if err == nil || !strings.Contains(err.Error(), `"NOT_ACCEPTED"`) || !strings.Contains(err.Error(), "AcceptEnv") {
		t.Fatalf("a refused variable gave %v", err)
	}
}

func TestPreviousOutputRefusedByTheServerIsAWarningNotAFailure(t *testing.T) {
	server := startSSHD(t) // sshd accepts no variables
	h := newHarness(t)
	inputs := remoteInputs(server.connection(nil), props{"create": "echo first"})
	state := h.mustCreate(typeRemoteCommand, "prev", inputs)
	inputs["create"] = resource.NewProperty("echo second")
	if _, err := h.update(typeRemoteCommand, "prev", state, inputs, false); err != nil {
		t.Fatal(err)
	}
	warned := false
	for _, entry := range h.logs {
		warned = warned || (entry.severity == pulumirpc.LogSeverity_WARNING && strings.Contains(entry.message, "PULUMI_COMMAND_STDOUT"))
	}
	if !warned {
		t.Fatalf("no warning about PULUMI_COMMAND_STDOUT: %v", h.logs)
	}
}

func TestEachLoggingModeLogsItsStreamsAndTheOutputsKeepBoth(t *testing.T) {
	server := startSSHD(t)
	cases := map[string][]string{
		"":                 {"to stdout", "to stderr"}, // the default: stdoutAndStderr
		logStdoutAndStderr: {"to stdout", "to stderr"},
		logStdout:          {"to stdout"},
		logStderr:          {"to stderr"},
		logNone:            nil,
	}
	for mode, want := range cases {
		t.Run("mode="+mode, func(t *testing.T) {
			h := newHarness(t)
			fields := props{"create": "echo 'to stdout'; sleep 0.2; echo 'to stderr' >&2"}
			if mode != "" {
				fields["logging"] = mode
			}
			state := h.mustCreate(typeRemoteCommand, "logged", remoteInputs(server.connection(nil), fields))
			if got := h.loggedLines(typeRemoteCommand, "logged"); strings.Join(got, "|") != strings.Join(want, "|") {
				t.Fatalf("logged %q, want %q", got, want)
			}
			if stringOf(t, state, "stdout") != "to stdout" || stringOf(t, state, "stderr") != "to stderr" {
				t.Fatalf("outputs %v", state)
			}
			// A failure quotes only what the mode logs.
			// The quoted command is `ab""cd`: only the output says "abcd".
			fields["create"] = `echo ab""cd; echo 'problem on stderr' >&2; exit 1`
			_, _, err := h.create(typeRemoteCommand, "failed", remoteInputs(server.connection(nil), fields), false)
			if err == nil {
				t.Fatal("the failing command succeeded")
			}
			logsStdout := mode == "" || mode == logStdout || mode == logStdoutAndStderr
			if strings.Contains(err.Error(), "abcd") != logsStdout {
				t.Fatalf("mode %q, error: %v", mode, err)
			}
		})
	}
}

func TestAWrongHostKeyIsRefusedAtOnceAndNothingRuns(t *testing.T) {
	server := startSSHD(t)
	other := startSSHD(t)
	h := newHarness(t)
	marker := filepath.Join(t.TempDir(), "ran")
	start := time.Now()
	_, _, err := h.create(typeRemoteCommand, "pinned", remoteInputs(server.connection(props{"hostKey": other.hostKey}),
		props{"create": "touch " + marker}), false)
	if err == nil || !strings.Contains(err.Error(), "host key mismatch for 127.0.0.1") {
		t.Fatalf("a wrong host key gave %v", err)
	}
	if elapsed := time.Since(start); elapsed > 3*time.Second {
		t.Fatalf("a wrong host key was retried for %s", elapsed)
	}
	if exists(marker) {
		t.Fatal("the command ran on a host whose key did not match")
	}
	if strings.Contains(err.Error(), "PRIVATE KEY") {
		t.Fatalf("the error quotes the key: %v", err)
	}
}

func TestADeadHostFailsWithinDialErrorLimitTimesPerDialTimeout(t *testing.T) {
	// A host that accepts TCP connections and never speaks SSH: each attempt waits out its timeout.
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer listener.Close()
	go func() {
		for {
			conn, err := listener.Accept()
			if err != nil {
				return
			}
			defer conn.Close()
		}
	}()
	h := newHarness(t)
	port := listener.Addr().(*net.TCPAddr).Port
	conn := secret(props{"host": "127.0.0.1", "port": float64(port), "privateKey": startKey(t),
		"dialErrorLimit": float64(3), "perDialTimeout": float64(1)})
	start := time.Now()
	_, _, err = h.create(typeRemoteCommand, "dead", remoteInputs(conn, props{"create": "true"}), false)
	elapsed := time.Since(start)
	if err == nil {
		t.Fatal("a dead host was reached")
	}
	if elapsed > 3*time.Second+500*time.Millisecond || elapsed < 2*time.Second {
		t.Fatalf("3 × 1 s took %s (%v)", elapsed, err)
	}
	if !strings.Contains(err.Error(), fmt.Sprintf("127.0.0.1:%d", port)) {
		t.Fatalf("the error does not name the host: %v", err)
	}
}

func TestAClosedPortIsRetriedDialErrorLimitTimes(t *testing.T) {
	h := newHarness(t)
	port := freePort(t)
	conn := secret(props{"host": "127.0.0.1", "port": float64(port), "privateKey": startKey(t),
		"dialErrorLimit": float64(2), "perDialTimeout": float64(5)})
	_, _, err := h.create(typeRemoteCommand, "closed", remoteInputs(conn, props{"create": "true"}), false)
	if err == nil || !strings.Contains(err.Error(), "2 attempts failed") || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("closed port gave %v", err)
	}
}

// startKey is a fresh private key (for connections that never get as far as authenticating).
func startKey(t *testing.T) string {
	_, pem := newClientKey(t)
	return pem
}

func TestAProxyCarriesTheConnectionAndItsHostKeyIsChecked(t *testing.T) {
	target := startSSHD(t)
	jump := startSSHD(t)
	h := newHarness(t)
	proxy := props{"host": "127.0.0.1", "port": float64(jump.port), "user": jump.user, "privateKey": jump.clientKey,
		"hostKey": jump.hostKey}
	// The target accepts the jump host's client key too, so one identity works for both, as in a stack.
	appendAuthorized(t, target, jump)
	conn := target.connection(props{"privateKey": jump.clientKey, "proxy": proxy})
	state := h.mustCreate(typeRemoteCommand, "via-proxy", remoteInputs(conn, props{"create": "echo through"}))
	if stringOf(t, state, "stdout") != "through" {
		t.Fatalf("stdout %v", state)
	}
	if log := jump.logText(t); !strings.Contains(log, fmt.Sprintf("127.0.0.1 port %d", target.port)) {
		t.Fatalf("the jump host did not forward to the target:\n%s", log)
	}
	proxy["hostKey"] = target.hostKey
	_, _, err := h.create(typeRemoteCommand, "bad-proxy", remoteInputs(target.connection(props{"proxy": proxy}),
		props{"create": "true"}), false)
	if err == nil || !strings.Contains(err.Error(), "proxy 127.0.0.1") || !strings.Contains(err.Error(), "host key mismatch") {
		t.Fatalf("a wrong proxy host key gave %v", err)
	}
}

func appendAuthorized(t *testing.T, server, other *testServer) {
	t.Helper()
	pub := publicKeyLine(t, other)
	file, err := os.OpenFile(filepath.Join(server.dir, "authorized_keys"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	if _, err := file.WriteString(pub); err != nil {
		t.Fatal(err)
	}
}

func TestPreviewRunsNothingAndLeavesOutputsUnknown(t *testing.T) {
	server := startSSHD(t)
	h := newHarness(t)
	marker := filepath.Join(t.TempDir(), "ran")
	inputs := remoteInputs(server.connection(nil), props{"create": "touch " + marker})
	id, state, err := h.create(typeRemoteCommand, "preview", inputs, true)
	if err != nil {
		t.Fatal(err)
	}
	if exists(marker) {
		t.Fatal("preview ran the command")
	}
	if !strings.HasPrefix(id, "preview") || len(id) != len("preview")+8 {
		t.Fatalf("preview id %q", id)
	}
	if !state["stdout"].ContainsUnknowns() || !state["stderr"].ContainsUnknowns() {
		t.Fatalf("preview outputs are known: %v", state)
	}
	// A preview of an update runs nothing and keeps the last outputs, as pulumi-command does.
	olds := h.mustCreate(typeRemoteCommand, "real", remoteInputs(server.connection(nil), props{"create": "echo old"}))
	inputs["create"] = resource.NewProperty("touch " + marker)
	previewed, err := h.update(typeRemoteCommand, "real", olds, inputs, true)
	if err != nil {
		t.Fatal(err)
	}
	if exists(marker) || stringOf(t, previewed, "stdout") != "old" {
		t.Fatalf("update preview ran or lost the outputs: %v", previewed)
	}
}

func TestCancelEndsARunningCommand(t *testing.T) {
	server := startSSHD(t)
	h := newHarness(t)
	done := make(chan error, 1)
	go func() {
		_, _, err := h.create(typeRemoteCommand, "long", remoteInputs(server.connection(nil), props{"create": "sleep 60"}), false)
		done <- err
	}()
	time.Sleep(time.Second)
	start := time.Now()
	if _, err := h.p.Cancel(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "cancelled") {
			t.Fatalf("a cancelled command gave %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("cancel did not end the command")
	}
	if time.Since(start) > 5*time.Second {
		t.Fatal("cancel took too long")
	}
}

func TestSecretsStayOutOfErrors(t *testing.T) {
	server := startSSHD(t)
	h := newHarness(t)
	// A secret command is not quoted.
	inputs := remoteInputs(server.connection(nil), props{"logging": logNone})
	inputs["create"] = secret("echo token-value-123; exit 4")
	_, _, err := h.create(typeRemoteCommand, "secret-cmd", inputs, false)
	if err == nil || strings.Contains(err.Error(), "token-value-123") || !strings.Contains(err.Error(), "[secret]") {
		t.Fatalf("secret command error: %v", err)
	}
	// A broken key is not quoted.
	broken := "-----BEGIN OPENSSH PRIVATE KEY-----\nbm90LWEta2V5LXN1cGVyLXNlY3JldC1tYXRlcmlhbA==\n-----END OPENSSH PRIVATE KEY-----\n"
	_, _, err = h.create(typeRemoteCommand, "broken-key", remoteInputs(server.connection(props{"privateKey": broken}),
		props{"create": "true"}), false)
	if err == nil || strings.Contains(err.Error(), "bm90LWEta2V5") {
		t.Fatalf("broken key error: %v", err)
	}
	// Refused credentials are not retried, and name the user.
	stranger := startSSHD(t)
	start := time.Now()
	_, _, err = h.create(typeRemoteCommand, "stranger", remoteInputs(server.connection(props{"privateKey": stranger.clientKey}),
		props{"create": "true"}), false)
	if err == nil || !strings.Contains(err.Error(), "refused the credentials") || time.Since(start) > 3*time.Second {
		t.Fatalf("refused key gave %v after %s", err, time.Since(start))
	}
}

// --- Check and Diff ------------------------------------------------------------------------------------

func TestCheckFillsDefaultsAndRefusesWhatTheSchemaDoesNotHave(t *testing.T) {
	h := newHarness(t)
	checked, failures := h.check(typeRemoteCommand, remoteInputs(secret(props{"host": "10.0.0.1"}), props{"create": "true"}))
	if len(failures) > 0 {
		t.Fatal(failures)
	}
	if !checked["connection"].IsSecret() {
		t.Fatal("the connection lost its secrecy")
	}
	conn := unsecret(checked["connection"]).ObjectValue()
	for key, want := range map[string]any{"user": "root", "port": 22.0, "dialErrorLimit": 10.0, "perDialTimeout": 15.0} {
		if got := conn[resource.PropertyKey(key)].V; got != want {
			t.Errorf("default %s = %v, want %v", key, got, want)
		}
	}
	_, failures = h.check(typeRemoteCommand, remoteInputs(secret(props{"port": 70000.0, "hostKey": "not a key", "hots": "x"}),
		props{"create": "true", "logging": "everything", "crate": "typo"}))
	got := map[string]bool{}
	for _, f := range failures {
		got[f.GetProperty()] = true
		if strings.Contains(f.GetReason(), "not a key") {
			t.Errorf("a failure quotes the value: %s", f.GetReason())
		}
	}
	for _, want := range []string{"connection.host", "connection.port", "connection.hostKey", "connection.hots", "logging", "crate"} {
		if !got[want] {
			t.Errorf("no failure for %s (got %v)", want, got)
		}
	}
	_, failures = h.check(typeRemoteCommand, resource.NewPropertyMapFromMap(props{"create": "true"}))
	if len(failures) != 1 || failures[0].GetProperty() != "connection" {
		t.Fatalf("a command without connection: %v", failures)
	}
}

func TestDiffReplacesOnTriggersAndUpdatesOnAnythingElse(t *testing.T) {
	h := newHarness(t)
	base := func(create string, triggers []any) resource.PropertyMap {
		return remoteInputs(secret(props{"host": "10.0.0.1"}), props{"create": create, "triggers": triggers})
	}
	olds := h.checked(typeRemoteCommand, base("a", []any{"10.0.0.1", 22.0}))
	if resp := h.diff(typeRemoteCommand, olds, base("a", []any{"10.0.0.1", 22.0})); resp.GetChanges() != pulumirpc.DiffResponse_DIFF_NONE {
		t.Fatalf("no change gave %v", resp)
	}
	resp := h.diff(typeRemoteCommand, olds, base("b", []any{"10.0.0.1", 22.0}))
	if resp.GetChanges() != pulumirpc.DiffResponse_DIFF_SOME || len(resp.GetReplaces()) != 0 ||
		resp.GetDetailedDiff()["create"].GetKind() != pulumirpc.PropertyDiff_UPDATE {
		t.Fatalf("a new create gave %v", resp)
	}
	resp = h.diff(typeRemoteCommand, olds, base("a", []any{"10.0.0.2", 22.0}))
	if len(resp.GetReplaces()) != 1 || resp.GetDetailedDiff()["triggers"].GetKind() != pulumirpc.PropertyDiff_UPDATE_REPLACE {
		t.Fatalf("new triggers gave %v", resp)
	}
	// A value not known yet (preview) is a change.
	unknown := base("a", []any{"10.0.0.1", 22.0})
	unknown["stdin"] = computedString()
	if resp := h.diff(typeRemoteCommand, olds, unknown); resp.GetChanges() != pulumirpc.DiffResponse_DIFF_SOME {
		t.Fatalf("an unknown stdin gave %v", resp)
	}
	// Outputs in the old state are not inputs.
	withOutputs := olds.Copy()
	withOutputs["stdout"] = resource.NewProperty("x")
	if resp := h.diff(typeRemoteCommand, withOutputs, base("a", []any{"10.0.0.1", 22.0})); resp.GetChanges() != pulumirpc.DiffResponse_DIFF_NONE {
		t.Fatalf("outputs counted as inputs: %v", resp)
	}
}

// --- CopyToRemote ---------------------------------------------------------------------------------------

func TestCopyToRemoteCopiesAFileIntoNewDirectoriesAndADirectoryRecursively(t *testing.T) {
	server := startSSHD(t)
	h := newHarness(t)
	src := t.TempDir()
	file := filepath.Join(src, "k3s")
	if err := os.WriteFile(file, []byte("binary"), 0o755); err != nil {
		t.Fatal(err)
	}
	fileAsset, err := asset.FromPath(file)
	if err != nil {
		t.Fatal(err)
	}
	dest := filepath.Join(t.TempDir(), "upload", "nested")
	inputs := resource.PropertyMap{
		"connection": server.connection(nil),
		"source":     resource.NewProperty(fileAsset),
		"remotePath": resource.NewProperty(filepath.Join(dest, "k3s")),
	}
	id, _, err := h.create(typeCopyToRemote, "file", inputs, false)
	if err != nil {
		t.Fatal(err)
	}
	if id == "" {
		t.Fatal("no id")
	}
	info, err := os.Stat(filepath.Join(dest, "k3s"))
	if err != nil || readFile(t, filepath.Join(dest, "k3s")) != "binary" || info.Mode().Perm() != 0o755 {
		t.Fatalf("copied file: %v %v", info, err)
	}

	tree := filepath.Join(src, "tree")
	if err := os.MkdirAll(filepath.Join(tree, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string]string{"a.txt": "a", "sub/b.txt": "b"} {
		if err := os.WriteFile(filepath.Join(tree, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	treeArchive, err := archive.FromPath(tree)
	if err != nil {
		t.Fatal(err)
	}
	inputs["source"] = resource.NewProperty(treeArchive)
	inputs["remotePath"] = resource.NewProperty(dest)
	if _, _, err := h.create(typeCopyToRemote, "dir", inputs, false); err != nil {
		t.Fatal(err)
	}
	if readFile(t, filepath.Join(dest, "tree", "a.txt")) != "a" || readFile(t, filepath.Join(dest, "tree", "sub", "b.txt")) != "b" {
		t.Fatal("the directory was not copied as <remotePath>/tree/...")
	}
}

func TestCopyToRemoteCopiesAgainOnlyWhenTheContentChanged(t *testing.T) {
	server := startSSHD(t)
	h := newHarness(t)
	file := filepath.Join(t.TempDir(), "artifact")
	if err := os.WriteFile(file, []byte("one"), 0o644); err != nil {
		t.Fatal(err)
	}
	dest := filepath.Join(t.TempDir(), "artifact")
	source := func() resource.PropertyValue {
		a, err := asset.FromPath(file)
		if err != nil {
			t.Fatal(err)
		}
		return resource.NewProperty(a)
	}
	inputs := resource.PropertyMap{"connection": server.connection(nil), "source": source(), "remotePath": resource.NewProperty(dest)}
	_, state, err := h.create(typeCopyToRemote, "artifact", inputs, false)
	if err != nil {
		t.Fatal(err)
	}
	if resp := h.diff(typeCopyToRemote, state, inputs); resp.GetChanges() != pulumirpc.DiffResponse_DIFF_NONE {
		t.Fatalf("an unchanged file is a change: %v", resp)
	}
	if err := os.WriteFile(dest, []byte("touched on the host"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, []byte("two"), 0o644); err != nil {
		t.Fatal(err)
	}
	inputs["source"] = source()
	if resp := h.diff(typeCopyToRemote, state, inputs); resp.GetDetailedDiff()["source"] == nil {
		t.Fatalf("a changed file is no change: %v", resp)
	}
	if _, err := h.update(typeCopyToRemote, "artifact", state, inputs, false); err != nil {
		t.Fatal(err)
	}
	if readFile(t, dest) != "two" {
		t.Fatal("the changed file was not uploaded")
	}
}

// --- local.Command --------------------------------------------------------------------------------------

func TestLocalCommandRunsWithItsDirEnvironmentInterpreterAndStdin(t *testing.T) {
	h := newHarness(t)
	dir := t.TempDir()
	inputs := resource.NewPropertyMapFromMap(props{
		"create":      "pwd; echo \"$GREETING\"; cat",
		"dir":         dir,
		"environment": props{"GREETING": "hi"},
		"interpreter": []any{"/bin/bash", "-c"},
		"stdin":       "from stdin",
		"delete":      "touch deleted",
	})
	state := h.mustCreate(typeLocalCommand, "local", inputs)
	if got := stringOf(t, state, "stdout"); got != dir+"\nhi\nfrom stdin" {
		t.Fatalf("stdout = %q", got)
	}
	if err := h.delete(typeLocalCommand, "local", state); err != nil {
		t.Fatal(err)
	}
	if !exists(filepath.Join(dir, "deleted")) {
		t.Fatal("delete did not run in dir")
	}
	_, _, err := h.create(typeLocalCommand, "local-failing", resource.NewPropertyMapFromMap(props{"create": "echo why >&2; exit 7"}), false)
	if err == nil || !strings.Contains(err.Error(), "Process exited with status 7") || !strings.Contains(err.Error(), "why") {
		t.Fatalf("failing local command: %v", err)
	}
	_, failures := h.check(typeLocalCommand, resource.NewPropertyMapFromMap(props{"assetPaths": []any{"*.txt"}}))
	if len(failures) != 1 || !strings.Contains(failures[0].GetReason(), "not implemented") {
		t.Fatalf("assetPaths: %v", failures)
	}
}
