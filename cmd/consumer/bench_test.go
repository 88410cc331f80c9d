package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sitefollow/sitefollow/internal/bench"
)

// TestBenchShort runs every scenario with tiny counts, the consumer under
// test being this test binary re-executed as main (see TestMain). It checks
// the harness works end to end, not the figures: short counts mean nothing.
func TestBenchShort(t *testing.T) {
	t.Setenv("SITEFOLLOW_TEST_MAIN", "1")
	jsonPath := filepath.Join(t.TempDir(), "bench.json")
	var out, errOut bytes.Buffer
	err := dispatch(t.Context(), []string{"bench", "--short", "--json", jsonPath, "--work-dir", t.TempDir()},
		envFrom(nil), &out, &errOut)
	if err != nil {
		t.Fatalf("bench: %v\nstdout:\n%s\nstderr:\n%s", err, out.String(), errOut.String())
	}
	raw, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	var rep bench.Report
	if err := json.Unmarshal(raw, &rep); err != nil {
		t.Fatalf("decode %s: %v", jsonPath, err)
	}
	if len(rep.Errors) > 0 {
		t.Errorf("scenarios did not finish: %+v", rep.Errors)
	}
	for _, n := range rep.Notes {
		if strings.Contains(n, "stop consumer") || strings.Contains(n, "dropped") {
			t.Errorf("note: %s", n)
		}
	}
	table := out.String()
	for _, want := range []string{"SHORT MODE", "GOMAXPROCS", "scenario", "target", "result"} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
	rows := map[string]int{}
	judged := 0
	for _, r := range rep.Rows {
		rows[r.Scenario]++
		if r.Pass != nil {
			judged++
		}
	}
	for _, name := range bench.Names() {
		if rows[name] == 0 {
			t.Errorf("no rows for scenario %s in the JSON", name)
		}
		if !strings.Contains(table, name) {
			t.Errorf("table lacks scenario %s:\n%s", name, table)
		}
	}
	if judged == 0 {
		t.Errorf("no row has a PASS/FAIL verdict:\n%s", table)
	}
}

func TestBenchRefusesUnknownScenario(t *testing.T) {
	var out, errOut bytes.Buffer
	err := dispatch(t.Context(), []string{"bench", "--scenarios", "ceiling,speed"}, envFrom(nil), &out, &errOut)
	if !errors.Is(err, bench.ErrUnknownScenario) {
		t.Fatalf("error: got %v, want ErrUnknownScenario", err)
	}
}
