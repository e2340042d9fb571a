// The lab's smoke workload (issue 22): the program deploys nginx, which no registry here serves, so
// the namespace cluster runs this in its place, under the image name the program deploys. It is not
// nginx and the lab report says so.
//
//	testserver serve [address]   answer every GET with 200 and the host name (default :80)
//	testserver get URL           one GET; print "<status> <body>", exit 1 unless 2xx (probes from a pod)
package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

func serve(address string) error {
	name, _ := os.Hostname()
	http.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "%s\n", name)
	})
	server := &http.Server{Addr: address, ReadHeaderTimeout: 5 * time.Second}
	return server.ListenAndServe()
}

func get(url string) error {
	client := &http.Client{Timeout: 5 * time.Second}
	response, err := client.Get(url)
	if err != nil {
		return err
	}
	defer response.Body.Close()
	body, err := io.ReadAll(io.LimitReader(response.Body, 4096))
	if err != nil {
		return err
	}
	fmt.Printf("%d %s", response.StatusCode, body)
	if response.StatusCode < 200 || response.StatusCode > 299 {
		return fmt.Errorf("status %d", response.StatusCode)
	}
	return nil
}

func main() {
	var err error
	switch {
	case len(os.Args) >= 2 && os.Args[1] == "serve":
		address := ":80"
		if len(os.Args) == 3 {
			address = os.Args[2]
		}
		err = serve(address)
	case len(os.Args) == 3 && os.Args[1] == "get":
		err = get(os.Args[2])
	default:
		err = fmt.Errorf("usage: testserver serve [address] | testserver get URL")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "testserver:", err)
		os.Exit(1)
	}
}
