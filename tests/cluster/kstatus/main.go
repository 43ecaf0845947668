// Command kstatus reads one Kubernetes object as JSON on stdin and prints its kstatus
// result (the health that Flux and Helm's kstatus wait compute), using Flux's cli-utils.
//
// Exit codes: 0 Current, 1 any other status, 2 bad input.
package main

import (
	"encoding/json"
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
	obj := map[string]interface{}{}
	if err := json.Unmarshal(raw, &obj); err != nil || len(obj) == 0 {
		fmt.Fprintln(os.Stderr, "stdin is not a JSON object:", err)
		os.Exit(2)
	}
	res, err := status.Compute(&unstructured.Unstructured{Object: obj})
	if err != nil {
		fmt.Fprintln(os.Stderr, "compute:", err)
		os.Exit(2)
	}
	fmt.Printf("%s\t%s\n", res.Status, res.Message)
	if res.Status != status.CurrentStatus {
		os.Exit(1)
	}
}
