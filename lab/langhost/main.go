// Command pulumi-language-python is OUR OWN small Python language host for the lab toolchain
// (lab/toolchain.sh), written because the upstream language host's Go module
// (github.com/pulumi/pulumi/sdk/python/cmd/pulumi-language-python/v3) is not served by the Go
// module proxy these machines reach (403 "This module version is not available").
//
// It is not upstream's language host and shares no code with it. It implements the engine's
// gRPC interface pulumirpc.LanguageRuntimeServer (github.com/pulumi/pulumi/sdk/v3/proto/go)
// just far enough to run this project's program the way Pulumi.yaml asks for
// (runtime: python, options: toolchain pip, virtualenv .venv):
//
//   - Run starts `<virtualenv>/bin/python -u pulumi-language-python-exec ...` (the exec script
//     from the SDK module, copied beside this binary by lab/toolchain.sh) with the arguments and
//     environment that script and the Python SDK read: --monitor, --engine, --project, --stack,
//     --pwd, --dry_run, --parallel, --organization, --root_directory, PROGRAM, and the config in
//     PULUMI_CONFIG / PULUMI_CONFIG_SECRET_KEYS (JSON).
//   - GetRequiredPlugins / GetRequiredPackages report the resource plugins of the packages
//     installed in the virtualenv (their pulumi-plugin.json files).
//   - GetPluginInfo, About and InstallDependencies (pip install -r requirements.txt into the
//     virtualenv) are minimal.
//   - Cancel interrupts the running program with SIGINT, as upstream's Python language host does
//     (pulumi/pulumi#22397): the engine cancels a run when a resource fails, and the program then
//     sees a KeyboardInterrupt, exactly as it does under the language host users run.
//
// Everything else (Handshake, RunPlugin, GenerateProgram, Pack, toolchains other than pip, ...)
// answers Unimplemented, which the engine treats as "not supported".
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
)

// version is set by lab/toolchain.sh (-ldflags -X main.version=...).
var version = "0.0.0-dev"

// exitCodeUserActionable is the exit code the exec script uses after it has shown the user
// an error message itself (the engine then only has to stop, not to report again).
const exitCodeUserActionable = 32

type host struct {
	pulumirpc.UnimplementedLanguageRuntimeServer
	engineAddress string
	execScript    string

	mu       sync.Mutex
	programs map[*exec.Cmd]struct{}
}

// programStopDelay is how long an interrupted program has to end before it is killed (upstream's
// WaitDelay).
const programStopDelay = 5 * time.Second

// interruptPrograms sends SIGINT to every running program, as upstream's host does on Cancel.
func (h *host) interruptPrograms() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for cmd := range h.programs {
		if cmd.Process != nil {
			_ = cmd.Process.Signal(os.Interrupt)
		}
	}
}

func (h *host) running() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.programs)
}

// Cancel asks the running programs to stop (SIGINT) and returns at once; Run reports how they ended.
func (h *host) Cancel(context.Context, *emptypb.Empty) (*emptypb.Empty, error) {
	h.interruptPrograms()
	return &emptypb.Empty{}, nil
}

func main() {
	// The engine starts language hosts as `pulumi-language-python [flags] ENGINE_ADDRESS`: the
	// engine's address is the last argument. Flags such as -tracing are accepted and ignored.
	args := os.Args[1:]
	if len(args) == 0 || strings.HasPrefix(args[len(args)-1], "-") {
		fmt.Fprintln(os.Stderr, "usage: pulumi-language-python [flags] ENGINE_ADDRESS")
		os.Exit(2)
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	h := &host{
		engineAddress: args[len(args)-1],
		execScript:    filepath.Join(filepath.Dir(self), "pulumi-language-python-exec"),
		programs:      map[*exec.Cmd]struct{}{},
	}
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-signals
		h.interruptPrograms()
		// The engine stops a host this way after every use: waiting only while a program still runs.
		for deadline := time.Now().Add(programStopDelay); h.running() > 0 && time.Now().Before(deadline); {
			time.Sleep(50 * time.Millisecond)
		}
		os.Exit(1)
	}()
	if _, err := os.Stat(h.execScript); err != nil {
		fmt.Fprintf(os.Stderr, "pulumi-language-python-exec must be beside %s: %v\n", self, err)
		os.Exit(1)
	}

	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	server := grpc.NewServer(grpc.MaxRecvMsgSize(400 * 1024 * 1024))
	pulumirpc.RegisterLanguageRuntimeServer(server, h)
	// The engine reads the port from the first line of stdout.
	fmt.Println(listener.Addr().(*net.TCPAddr).Port)
	if err := server.Serve(listener); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// virtualenv returns the virtualenv directory named by the project's runtime options
// (relative to the project root), or an error for options this host does not support.
func virtualenv(info *pulumirpc.ProgramInfo) (string, error) {
	if info == nil {
		return "", errors.New("the engine sent no program info")
	}
	options := info.GetOptions().AsMap()
	if toolchain, ok := options["toolchain"].(string); ok && toolchain != "" && toolchain != "pip" {
		return "", fmt.Errorf("toolchain %q is not supported by this lab language host (only pip)", toolchain)
	}
	venv, _ := options["virtualenv"].(string)
	if venv == "" {
		return "", errors.New("this lab language host needs runtime.options.virtualenv in Pulumi.yaml")
	}
	if !filepath.IsAbs(venv) {
		venv = filepath.Join(info.GetRootDirectory(), venv)
	}
	return venv, nil
}

func pythonIn(venv string) string { return filepath.Join(venv, "bin", "python") }

// venvEnv is the environment of a process run inside the virtualenv, as `activate` sets it.
func venvEnv(venv string, extra ...string) []string {
	env := []string{}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PYTHONHOME=") && !strings.HasPrefix(kv, "VIRTUAL_ENV=") &&
			!strings.HasPrefix(kv, "PATH=") {
			env = append(env, kv)
		}
	}
	env = append(env, "VIRTUAL_ENV="+venv, "PATH="+filepath.Join(venv, "bin")+string(os.PathListSeparator)+os.Getenv("PATH"))
	return append(env, extra...)
}

// pluginFile is the pulumi-plugin.json a Pulumi package installs next to its Python code.
type pluginFile struct {
	Resource bool   `json:"resource"`
	Name     string `json:"name"`
	Version  string `json:"version"`
	Server   string `json:"server"`
}

// installedPlugins reads every site-packages/*/pulumi-plugin.json of the virtualenv.
func installedPlugins(venv string) ([]pluginFile, error) {
	matches, err := filepath.Glob(filepath.Join(venv, "lib", "python*", "site-packages", "*", "pulumi-plugin.json"))
	if err != nil {
		return nil, err
	}
	sort.Strings(matches)
	var plugins []pluginFile
	for _, path := range matches {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		var p pluginFile
		if err := json.Unmarshal(data, &p); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if !p.Resource || p.Name == "" {
			continue
		}
		if p.Version != "" && !strings.HasPrefix(p.Version, "v") {
			p.Version = "v" + p.Version
		}
		plugins = append(plugins, p)
	}
	return plugins, nil
}

// programPlugins: the resource plugins the program's virtualenv asks for.
func programPlugins(info *pulumirpc.ProgramInfo) ([]pluginFile, error) {
	venv, err := virtualenv(info)
	if err != nil {
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	}
	return installedPlugins(venv)
}

func (h *host) GetRequiredPlugins(
	_ context.Context, req *pulumirpc.GetRequiredPluginsRequest,
) (*pulumirpc.GetRequiredPluginsResponse, error) {
	plugins, err := programPlugins(req.GetInfo())
	if err != nil {
		return nil, err
	}
	resp := &pulumirpc.GetRequiredPluginsResponse{}
	for _, p := range plugins {
		resp.Plugins = append(resp.Plugins, &pulumirpc.PluginDependency{
			Name: p.Name, Kind: "resource", Version: p.Version, Server: p.Server,
		})
	}
	return resp, nil
}

func (h *host) GetRequiredPackages(
	_ context.Context, req *pulumirpc.GetRequiredPackagesRequest,
) (*pulumirpc.GetRequiredPackagesResponse, error) {
	plugins, err := programPlugins(req.GetInfo())
	if err != nil {
		return nil, err
	}
	resp := &pulumirpc.GetRequiredPackagesResponse{}
	for _, p := range plugins {
		resp.Packages = append(resp.Packages, &pulumirpc.PackageDependency{
			Name: p.Name, Kind: "resource", Version: p.Version, Server: p.Server,
		})
	}
	return resp, nil
}

func (h *host) Run(ctx context.Context, req *pulumirpc.RunRequest) (*pulumirpc.RunResponse, error) {
	venv, err := virtualenv(req.GetInfo())
	if err != nil {
		return &pulumirpc.RunResponse{Error: err.Error()}, nil
	}
	python := pythonIn(venv)
	if _, err := os.Stat(python); err != nil {
		return &pulumirpc.RunResponse{Error: fmt.Sprintf(
			"the virtualenv %s has no bin/python; create it: python3 -m venv %s && %s -m pip install -r requirements.txt",
			venv, venv, python)}, nil
	}

	// A stack without config is an empty object to the exec script, not `null` (which it cannot iterate).
	configMap := req.GetConfig()
	if configMap == nil {
		configMap = map[string]string{}
	}
	config, err := json.Marshal(configMap)
	if err != nil {
		return nil, err
	}
	secretKeys := req.GetConfigSecretKeys()
	if secretKeys == nil {
		secretKeys = []string{}
	}
	secretKeysJSON, err := json.Marshal(secretKeys)
	if err != nil {
		return nil, err
	}

	program := req.GetProgram()
	if program == "" {
		program = "."
	}
	args := []string{
		"-u", h.execScript,
		"--monitor", req.GetMonitorAddress(),
		"--engine", h.engineAddress,
		"--project", req.GetProject(),
		"--stack", req.GetStack(),
		"--pwd", req.GetPwd(),
		"--dry_run", strconv.FormatBool(req.GetDryRun()),
		"--parallel", strconv.Itoa(int(req.GetParallel())),
	}
	if org := req.GetOrganization(); org != "" {
		args = append(args, "--organization", org)
	}
	if root := req.GetInfo().GetRootDirectory(); root != "" {
		args = append(args, "--root_directory", root)
	}
	args = append(args, program)
	args = append(args, req.GetArgs()...)

	cmd := exec.CommandContext(ctx, python, args...)
	cmd.Dir = req.GetPwd()
	cmd.Env = venvEnv(venv,
		"PULUMI_CONFIG="+string(config),
		"PULUMI_CONFIG_SECRET_KEYS="+string(secretKeysJSON),
		"PYTHONUNBUFFERED=1",
	)
	// The engine shows what a language host writes on stdout and stderr.
	cmd.Stdout = os.Stdout
	cmd.Stderr = os.Stderr
	// As upstream: the engine's cancellation interrupts the program, which gets programStopDelay to end.
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = programStopDelay
	if err = cmd.Start(); err == nil {
		h.mu.Lock()
		h.programs[cmd] = struct{}{}
		h.mu.Unlock()
		err = cmd.Wait()
		h.mu.Lock()
		delete(h.programs, cmd)
		h.mu.Unlock()
	}
	var exitErr *exec.ExitError
	switch {
	case err == nil:
		return &pulumirpc.RunResponse{}, nil
	case errors.As(err, &exitErr) && exitErr.ExitCode() == exitCodeUserActionable:
		return &pulumirpc.RunResponse{Bail: true}, nil
	case errors.As(err, &exitErr):
		return &pulumirpc.RunResponse{Error: fmt.Sprintf("Program exited with non-zero exit code: %d", exitErr.ExitCode())}, nil
	default:
		return &pulumirpc.RunResponse{Error: fmt.Sprintf("could not run %s: %v", python, err)}, nil
	}
}

func (h *host) GetPluginInfo(context.Context, *emptypb.Empty) (*pulumirpc.PluginInfo, error) {
	return &pulumirpc.PluginInfo{Version: version}, nil
}

func (h *host) About(_ context.Context, req *pulumirpc.AboutRequest) (*pulumirpc.AboutResponse, error) {
	venv, err := virtualenv(req.GetInfo())
	if err != nil {
		return nil, status.Error(codes.FailedPrecondition, err.Error())
	}
	python := pythonIn(venv)
	out, err := exec.Command(python, "--version").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --version: %w", python, err)
	}
	return &pulumirpc.AboutResponse{
		Executable: python,
		Version:    strings.TrimPrefix(strings.TrimSpace(string(out)), "Python "),
		Metadata:   map[string]string{"languageHost": "k3s-cilium lab language host (not upstream's)", "toolchain": "pip"},
	}, nil
}

// streamWriter sends what pip writes to the engine as InstallDependencies messages.
type streamWriter struct {
	mu     *sync.Mutex
	stream grpc.ServerStreamingServer[pulumirpc.InstallDependenciesResponse]
	stderr bool
}

func (w streamWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	data := append([]byte(nil), p...)
	msg := &pulumirpc.InstallDependenciesResponse{Stdout: data}
	if w.stderr {
		msg = &pulumirpc.InstallDependenciesResponse{Stderr: data}
	}
	if err := w.stream.Send(msg); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (h *host) InstallDependencies(
	req *pulumirpc.InstallDependenciesRequest, stream grpc.ServerStreamingServer[pulumirpc.InstallDependenciesResponse],
) error {
	venv, err := virtualenv(req.GetInfo())
	if err != nil {
		return status.Error(codes.FailedPrecondition, err.Error())
	}
	mu := &sync.Mutex{}
	stdout := streamWriter{mu: mu, stream: stream}
	stderr := streamWriter{mu: mu, stream: stream, stderr: true}
	run := func(dir string, name string, args ...string) error {
		cmd := exec.CommandContext(stream.Context(), name, args...)
		cmd.Dir = dir
		cmd.Env = venvEnv(venv)
		cmd.Stdout, cmd.Stderr = stdout, stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
		}
		return nil
	}
	dir := req.GetInfo().GetProgramDirectory()
	if dir == "" {
		dir = req.GetDirectory()
	}
	if _, err := os.Stat(pythonIn(venv)); err != nil {
		if err := run(dir, "python3", "-m", "venv", venv); err != nil {
			return err
		}
	}
	requirements := filepath.Join(dir, "requirements.txt")
	if _, err := os.Stat(requirements); err != nil {
		_, _ = io.WriteString(stdout, "no requirements.txt: nothing to install\n")
		return nil
	}
	return run(dir, pythonIn(venv), "-m", "pip", "install", "-r", requirements)
}
