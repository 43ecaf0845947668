// Command kstatus reads one Kubernetes object as JSON on stdin and prints its kstatus
// result (the health that Flux and Helm's kstatus wait compute), using Flux's cli-utils.
//
// Exit codes: 0 Current, 1 any other status, 2 bad input.
package main

import (
	"fmt"
	"io"
	"os"

	"github.com/fluxcd/cli-utils/pkg/kstatus/status"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

func main() {
	raw, err := io.ReadAll(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "read stdin:", err)
		os.Exit(2)
	}
	// UnmarshalJSON keeps integers as int64, as kstatus' accessors expect.
	obj := &unstructured.Unstructured{}
	if err := obj.UnmarshalJSON(raw); err != nil {
		fmt.Fprintln(os.Stderr, "stdin is not a Kubernetes object:", err)
		os.Exit(2)
	}
	res, err := status.Compute(obj)
	if err != nil {
		fmt.Fprintln(os.Stderr, "compute:", err)
		os.Exit(2)
	}
	fmt.Printf("%s\t%s\n", res.Status, res.Message)
	if res.Status != status.CurrentStatus {
		os.Exit(1)
	}
}
