// Command gittestserver serves the bare git repositories under --root over smart HTTP on
// 127.0.0.1, with Flux's gittestserver package (the git server of Flux's own tests, which runs
// the git CLI's upload-pack and receive-pack). Pushing to a repository that does not exist yet
// creates it.
//
// It prints "listening on http://127.0.0.1:PORT" once it accepts connections, and serves until
// stdin is closed or it receives SIGTERM/SIGINT, so it never outlives the process that started it.
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/fluxcd/pkg/gittestserver"
)

func main() {
	root := flag.String("root", "", "directory that holds the bare repositories (required)")
	flag.Parse()
	if *root == "" {
		fmt.Fprintln(os.Stderr, "--root is required")
		os.Exit(2)
	}
	if err := os.MkdirAll(*root, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "create root:", err)
		os.Exit(1)
	}
	srv := gittestserver.NewGitServer(*root).AutoCreate()
	if err := srv.StartHTTP(); err != nil {
		fmt.Fprintln(os.Stderr, "start:", err)
		os.Exit(1)
	}
	defer srv.StopHTTP()
	fmt.Printf("listening on %s\n", srv.HTTPAddress())

	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); done <- struct{}{} }()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() { <-sig; done <- struct{}{} }()
	<-done
}
