package bench

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"
)

// Row is one measured figure, with its target when it has one.
type Row struct {
	Scenario string `json:"scenario"`
	Metric   string `json:"metric"`
	// Value is the figure compared with the target, or the figure itself
	// when the row has no target.
	Value float64 `json:"value"`
	// Text is the value as printed, with context such as counts or ratios.
	Text   string `json:"text"`
	Target string `json:"target,omitempty"`
	// Pass is nil when the row has no target.
	Pass *bool `json:"pass,omitempty"`
	// Detail holds the raw figures behind Value.
	Detail map[string]float64 `json:"detail,omitempty"`
}

// Result is "PASS", "FAIL", or empty for a row without a target.
func (r Row) Result() string {
	switch {
	case r.Pass == nil:
		return ""
	case *r.Pass:
		return "PASS"
	default:
		return "FAIL"
	}
}

// ScenarioError is a scenario that could not finish.
type ScenarioError struct {
	Scenario string `json:"scenario"`
	Error    string `json:"error"`
}

// Machine describes where the benchmark ran.
type Machine struct {
	OS         string `json:"os"`
	Arch       string `json:"arch"`
	GOMAXPROCS int    `json:"gomaxprocs"`
	NumCPU     int    `json:"numCPU"`
	GoVersion  string `json:"goVersion"`
	// LoadAverage is /proc/loadavg's 1-, 5- and 15-minute figures when the
	// run started: anything well above 0 means other work competed for the
	// CPUs, and every figure is then suspect.
	LoadAverage string `json:"loadAverage,omitempty"`
}

// ConsumerSettings are the consumer settings the targets depend on, as the
// consumer under test read them (before per-scenario changes).
type ConsumerSettings struct {
	BatchMaxSites  int    `json:"batchMaxSites"`
	BatchLinger    string `json:"batchLinger"`
	MaxConcurrency int    `json:"maxConcurrency"`
	MaxAckPending  int    `json:"maxAckPending"`
}

// Report is a benchmark run's outcome.
type Report struct {
	Date      time.Time        `json:"date"`
	Short     bool             `json:"short"`
	Scenarios []string         `json:"scenarios"`
	Machine   Machine          `json:"machine"`
	Consumer  ConsumerSettings `json:"consumer"`
	Rows      []Row            `json:"rows"`
	Errors    []ScenarioError  `json:"errors,omitempty"`
	// Notes are harness observations that may make a figure unreliable.
	Notes []string `json:"notes,omitempty"`
}

// Failed returns the rows whose target was missed.
func (r *Report) Failed() []Row {
	var out []Row
	for _, row := range r.Rows {
		if row.Pass != nil && !*row.Pass {
			out = append(out, row)
		}
	}
	return out
}

// shortNote explains why short runs do not fail on missed targets.
const shortNote = "SHORT MODE: counts are about 1/100 of a full run, far too small for the targets to mean anything;\n" +
	"PASS/FAIL is shown only to prove the harness works and does not affect the exit status."

// WriteTable prints the header, the table, notes and errors.
func (r *Report) WriteTable(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "sitefollow benchmark, %s\n", r.Date.Format(time.RFC3339))
	fmt.Fprintf(&b, "machine: %s/%s, GOMAXPROCS %d, NumCPU %d, %s, load average at start %s\n",
		r.Machine.OS, r.Machine.Arch, r.Machine.GOMAXPROCS, r.Machine.NumCPU, r.Machine.GoVersion, cmp.Or(r.Machine.LoadAverage, "unknown"))
	fmt.Fprintf(&b, "consumer: batch %d sites, linger %s, max concurrency %d, max ack pending %d\n",
		r.Consumer.BatchMaxSites, r.Consumer.BatchLinger, r.Consumer.MaxConcurrency, r.Consumer.MaxAckPending)
	if r.Short {
		b.WriteString(shortNote + "\n")
	}
	b.WriteString("\n")
	if _, err := io.WriteString(w, b.String()); err != nil {
		return fmt.Errorf("write table: %w", err)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "scenario\tmetric\tvalue\ttarget\tresult")
	for _, row := range r.Rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", row.Scenario, row.Metric, row.Text, row.Target, row.Result())
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write table: %w", err)
	}
	b.Reset()
	if len(r.Notes) > 0 {
		b.WriteString("\nnotes:\n")
		for _, n := range r.Notes {
			fmt.Fprintf(&b, "  - %s\n", n)
		}
	}
	if len(r.Errors) > 0 {
		b.WriteString("\nscenarios that did not finish:\n")
		for _, e := range r.Errors {
			fmt.Fprintf(&b, "  %s: %s\n", e.Scenario, e.Error)
		}
	}
	if failed := r.Failed(); len(failed) > 0 {
		b.WriteString("\ntargets missed:\n")
		for _, row := range failed {
			fmt.Fprintf(&b, "  %s %s: %s (target %s)\n", row.Scenario, row.Metric, row.Text, row.Target)
		}
	} else if len(r.Errors) == 0 {
		b.WriteString("\nevery target met\n")
	}
	if _, err := io.WriteString(w, b.String()); err != nil {
		return fmt.Errorf("write table: %w", err)
	}
	return nil
}

// WriteJSON writes the report to path.
func (r *Report) WriteJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("write json: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write json: %w", err)
	}
	return nil
}
