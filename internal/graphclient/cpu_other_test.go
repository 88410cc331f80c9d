//go:build !unix

package graphclient

import (
	"testing"
	"time"
)

// processCPU is unknown here; benchmarks then report 0 cpu-ns/op.
func processCPU(testing.TB) time.Duration { return 0 }
