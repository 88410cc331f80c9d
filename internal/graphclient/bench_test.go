package graphclient

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/sitefollow/sitefollow/internal/graphsim"
)

// BenchmarkApply measures one add call of 20 sites, client and simulator
// together over loopback HTTP, round-robin over 1,000 users: the CPU the
// pipeline pays per Graph call.
func BenchmarkApply(b *testing.B) {
	const users, perCall, pool = 1000, 20, 2000
	for _, op := range []Operation{Add, Remove} {
		b.Run(string(op), func(b *testing.B) {
			sim, err := graphsim.New(graphsim.Options{AllowAnySite: true})
			if err != nil {
				b.Fatalf("graphsim.New: %v", err)
			}
			b.Cleanup(sim.Close)
			c, err := New(Config{
				BaseURL:    sim.GraphURL(),
				UserAgent:  testUserAgent,
				Credential: simCredential(b, sim),
				Logger:     zerolog.Nop(),
				Metrics:    NewMetrics(prometheus.NewRegistry()),
			})
			if err != nil {
				b.Fatalf("New: %v", err)
			}
			ids := siteIDs(1, pool)
			userIDs := make([]string, users)
			for i := range userIDs {
				userIDs[i] = fmt.Sprintf("user-%04d@contoso.com", i)
			}
			ctx := context.Background()
			if err := c.CheckToken(ctx); err != nil {
				b.Fatalf("CheckToken: %v", err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			cpu := processCPU(b)
			for i := range b.N {
				if i%4096 == 4095 {
					b.StopTimer()
					sim.Reset() // the sim records every call
					b.StartTimer()
				}
				start := (i * perCall) % pool
				got := c.Apply(ctx, userIDs[i%users], op, ids[start:start+perCall])
				for _, r := range got {
					if r.Outcome != Applied {
						b.Fatalf("site %s: %v (%v)", r.SiteID, r.Outcome, r.Err)
					}
				}
			}
			// Wall time includes loopback round trips; CPU time (client and
			// simulator together, plus GC) is the cost the pipeline pays.
			b.ReportMetric(float64(processCPU(b)-cpu)/float64(b.N), "cpu-ns/op")
		})
	}
}

// BenchmarkEntries decodes a 20-site add answer, as Apply does (scan) and
// as encoding/json would (json, the fallback).
func BenchmarkEntries(b *testing.B) {
	var sb strings.Builder
	sb.WriteString(`{"value":[`)
	for i := range 20 {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString(strings.ReplaceAll(siteJSON, "712a596e", fmt.Sprintf("%08x", i)))
	}
	sb.WriteString(`]}`)
	body := sb.String()
	b.Run("scan", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(body)))
		for range b.N {
			if got, ok := scanEntries(body); !ok || len(got) != 20 {
				b.Fatalf("scanEntries: %d entries, ok %v", len(got), ok)
			}
		}
	})
	b.Run("json", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(body)))
		for range b.N {
			var v struct {
				Value []entry `json:"value"`
			}
			if err := json.Unmarshal([]byte(body), &v); err != nil || len(v.Value) != 20 {
				b.Fatalf("Unmarshal: %v", err)
			}
		}
	})
}
