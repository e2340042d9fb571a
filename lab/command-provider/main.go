// Command pulumi-resource-command is the LAB'S OWN implementation of the pulumi-command provider
// plugin, for the lab and the tests only (lab/README.md, lab/command-provider/README.md). Users run
// pulumi-command's real provider; the Go module proxy these machines reach serves no version of it.
//
// It answers the engine's gRPC interface (pulumirpc.ResourceProviderServer) for the resource types
// of pulumi-command 1.2.1 this project's program uses: command:remote:Command,
// command:local:Command and command:remote:CopyToRemote, with the inputs and outputs the installed
// Python SDK (pulumi_command 1.2.1) declares. No code of pulumi-command is in it.
package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"

	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// version is set by lab/toolchain.sh to the pulumi-command version the SDK asks for.
var version = "0.0.0-dev"

// engineLogger logs through the engine at address (the plugin's last argument); without one it
// writes to stderr.
func engineLogger(address string) (logger, error) {
	if address == "" {
		return func(_ context.Context, severity pulumirpc.LogSeverity, urn, message string, _ bool) {
			fmt.Fprintf(os.Stderr, "%s %s: %s\n", severity, urn, message)
		}, nil
	}
	conn, err := grpc.NewClient(address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	engine := pulumirpc.NewEngineClient(conn)
	return func(ctx context.Context, severity pulumirpc.LogSeverity, urn, message string, ephemeral bool) {
		// A cancelled operation still reports what it printed.
		_, _ = engine.Log(context.WithoutCancel(ctx), &pulumirpc.LogRequest{
			Severity: severity, Message: message, Urn: urn, Ephemeral: ephemeral,
		})
	}, nil
}

func main() {
	// The engine starts providers as `pulumi-resource-command [flags] ENGINE_ADDRESS`.
	address := ""
	if args := os.Args[1:]; len(args) > 0 && !strings.HasPrefix(args[len(args)-1], "-") {
		address = args[len(args)-1]
	}
	log, err := engineLogger(address)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	server := grpc.NewServer(grpc.MaxRecvMsgSize(400 * 1024 * 1024))
	pulumirpc.RegisterResourceProviderServer(server, newProvider(log))
	// The engine reads the port from the first line of stdout.
	fmt.Println(listener.Addr().(*net.TCPAddr).Port)
	if err := server.Serve(listener); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
