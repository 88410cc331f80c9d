package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/sitefollow/sitefollow/internal/dlq"
	"github.com/sitefollow/sitefollow/internal/event"
)

// listLine is one record in `dlq list --json`; scripts rely on its names.
type listLine struct {
	Seq        uint64       `json:"seq"`
	Time       string       `json:"time"`
	Code       string       `json:"code"`
	UserID     string       `json:"userId"`
	Action     event.Action `json:"action"`
	SiteID     string       `json:"siteId"`
	Message    string       `json:"message"`
	Replays    int          `json:"replays"`
	Attempts   int          `json:"attempts"`
	HTTPStatus int          `json:"httpStatus"`
	Subject    string       `json:"subject"`
	// DecodeError is set, and the fields from the body empty, for a record
	// whose body is not a dead letter.
	DecodeError string `json:"decodeError,omitempty"`
}

func newListLine(r dlq.Record) listLine {
	d := r.Letter
	l := listLine{Seq: r.Seq, Time: r.Time.UTC().Format(time.RFC3339Nano), Code: d.Error.Code, UserID: d.UserID,
		Action: d.Action, SiteID: d.SiteID, Message: d.Error.Message, Replays: d.Replays, Attempts: d.Attempts,
		HTTPStatus: d.Error.HTTPStatus, Subject: r.Subject}
	if r.Err != nil {
		l.DecodeError = r.Err.Error()
	}
	return l
}

// Widths of the table's cells from outside data.
const (
	cellBytes    = 128
	messageBytes = 96
)

func dlqList(ctx context.Context, args []string, getenv func(string) string, con console) error {
	f := newDLQFlags("list", "[--code C] [--user U] [--site S] [--since 2h] [--seq A-B] [--limit N] [--json]", getenv)
	if err := f.parse(args, con); err != nil {
		return err
	}
	flt, err := f.filter(time.Now())
	if err != nil {
		return err
	}
	c, err := f.connect(ctx)
	if err != nil {
		return err
	}
	defer c.nc.Close()
	codes := map[string]int{}
	matched, shown := 0, 0
	enc := json.NewEncoder(con.out)
	tw := tabwriter.NewWriter(con.out, 0, 4, 2, ' ', 0)
	if !f.json {
		fmt.Fprintln(tw, "SEQ\tTIME\tCODE\tUSER\tACTION\tSITE\tREPLAYS\tMESSAGE")
	}
	err = c.store.Scan(ctx, flt, func(r dlq.Record) error {
		matched++
		code := r.Letter.Error.Code
		if r.Err != nil {
			code = "(undecodable)"
		}
		codes[code]++
		if f.limit > 0 && shown >= f.limit {
			return nil
		}
		shown++
		if f.json {
			if err := enc.Encode(newListLine(r)); err != nil {
				return fmt.Errorf("dlq list: %w", err)
			}
			return nil
		}
		d := r.Letter
		msg := d.Error.Message
		if r.Err != nil {
			msg = r.Err.Error()
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", r.Seq, r.Time.UTC().Format(time.RFC3339),
			dlq.Printable(code, cellBytes), cmp.Or(dlq.Printable(d.UserID, cellBytes), "-"), cmp.Or(dlq.Printable(string(d.Action), 32), "-"),
			cmp.Or(dlq.Printable(d.SiteID, cellBytes), "-"), d.Replays, dlq.Printable(msg, messageBytes))
		return nil
	})
	if ferr := tw.Flush(); ferr != nil && err == nil {
		err = fmt.Errorf("dlq list: %w", ferr)
	}
	if err != nil {
		return fmt.Errorf("dlq list: %w", err)
	}
	summary := con.out
	if f.json {
		// stdout stays one object per line for scripts.
		summary = con.err
	} else if matched > 0 {
		fmt.Fprintln(con.out)
		ctw := tabwriter.NewWriter(con.out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(ctw, "CODE\tCOUNT")
		for _, code := range sortedKeys(codes) {
			fmt.Fprintf(ctw, "%s\t%d\n", dlq.Printable(code, cellBytes), codes[code])
		}
		if err := ctw.Flush(); err != nil {
			return fmt.Errorf("dlq list: %w", err)
		}
	}
	fmt.Fprintf(summary, "dlq list: %s in %s matched, %d shown, %s\n", plural(matched, "dead letter"), c.store.Name(), shown, plural(len(codes), "code"))
	return nil
}

// rawTextBytes bounds a raw payload or undecodable body shown as text.
const rawTextBytes = 16 << 10

func dlqShow(ctx context.Context, args []string, getenv func(string) string, con console) error {
	f := newDLQFlags("show", "SEQ [--json]", getenv)
	// SEQ may come before the flags, as the synopsis has it.
	var seqArg string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		seqArg, args = args[0], args[1:]
	}
	if err := f.parse(args, con); err != nil {
		return err
	}
	if seqArg == "" && f.fs.NArg() > 0 {
		seqArg = f.fs.Arg(0)
	}
	seq, err := strconv.ParseUint(seqArg, 10, 64)
	if err != nil || seq == 0 {
		return fmt.Errorf("dlq show: want the dead letter's stream sequence (as dlq list shows it), got %q", dlq.Printable(seqArg, 64))
	}
	c, err := f.connect(ctx)
	if err != nil {
		return err
	}
	defer c.nc.Close()
	r, err := c.store.Get(ctx, seq)
	if err != nil {
		return fmt.Errorf("dlq show: %w", err)
	}
	if f.json {
		return showJSON(con, r)
	}
	var b bytes.Buffer
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	row := func(k string, v any) { fmt.Fprintf(tw, "%s\t%v\n", k, v) }
	row("seq", r.Seq)
	row("stored", r.Time.UTC().Format(time.RFC3339Nano))
	row("subject", dlq.Printable(r.Subject, cellBytes))
	if r.Err != nil {
		row("error", dlq.Printable(r.Err.Error(), rawTextBytes))
		if err := tw.Flush(); err != nil {
			return fmt.Errorf("dlq show: %w", err)
		}
		fmt.Fprint(con.out, b.String())
		fmt.Fprintln(con.out, "body:")
		fmt.Fprint(con.out, showRaw(r.Data))
		return nil
	}
	d := r.Letter
	row("code", dlq.Printable(d.Error.Code, rawTextBytes))
	row("message", dlq.Printable(d.Error.Message, rawTextBytes))
	row("httpStatus", d.Error.HTTPStatus)
	if d.Error.RequestID != "" || d.Error.ClientRequestID != "" {
		row("requestId", dlq.Printable(d.Error.RequestID, cellBytes))
		row("clientRequestId", dlq.Printable(d.Error.ClientRequestID, cellBytes))
	}
	row("userId", dlq.Printable(d.UserID, rawTextBytes))
	row("action", cmp.Or(dlq.Printable(string(d.Action), rawTextBytes), "-"))
	row("siteId", cmp.Or(dlq.Printable(d.SiteID, rawTextBytes), "- (the whole event)"))
	row("attempts", d.Attempts)
	row("replays", d.Replays)
	row("deadAt", d.DeadAt.UTC().Format(time.RFC3339Nano))
	row("origin", fmt.Sprintf("%s sequence %d, subject %s", dlq.Printable(d.Origin.Stream, cellBytes), d.Origin.Sequence, dlq.Printable(d.Origin.Subject, cellBytes)))
	if !d.Origin.StreamCreated.IsZero() {
		row("origin created", d.Origin.StreamCreated.UTC().Format(time.RFC3339Nano))
	}
	if d.Narrowed {
		row("narrowed", "yes: event is the request narrowed to siteId")
	}
	for _, k := range sortedKeys(d.Truncated) {
		row("truncated", fmt.Sprintf("%s (was %d bytes)", dlq.Printable(k, 64), d.Truncated[k]))
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("dlq show: %w", err)
	}
	fmt.Fprint(con.out, b.String())
	if len(d.Event) > 0 {
		var pretty bytes.Buffer
		if err := json.Indent(&pretty, d.Event, "  ", "  "); err != nil {
			return fmt.Errorf("dlq show: event: %w", err)
		}
		fmt.Fprintln(con.out, "event:")
		fmt.Fprintf(con.out, "  %s\n", printableLines(pretty.String()))
	}
	if d.RawPayload != nil {
		fmt.Fprintf(con.out, "rawPayload (%d bytes):\n", len(d.RawPayload))
		fmt.Fprint(con.out, showRaw(d.RawPayload))
	}
	if _, err := dlq.ReplayRequest(d); err != nil {
		fmt.Fprintf(con.out, "replay: not possible (%s)\n", dlq.Printable(err.Error(), rawTextBytes))
	} else {
		fmt.Fprintf(con.out, "replay: consumer dlq replay --seq %d-%d\n", r.Seq, r.Seq)
	}
	return nil
}

// showJSON prints the record as stored, with its place in the stream.
func showJSON(con console, r dlq.Record) error {
	out := struct {
		Seq         uint64          `json:"seq"`
		Time        string          `json:"time"`
		Subject     string          `json:"subject"`
		Record      json.RawMessage `json:"record,omitempty"`
		Body        string          `json:"body,omitempty"`
		DecodeError string          `json:"decodeError,omitempty"`
	}{Seq: r.Seq, Time: r.Time.UTC().Format(time.RFC3339Nano), Subject: r.Subject}
	if r.Err != nil || !json.Valid(r.Data) {
		out.Body, out.DecodeError = string(r.Data), cmp.Or(errText(r.Err), "not JSON")
	} else {
		out.Record = r.Data
	}
	data, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		return fmt.Errorf("dlq show: %w", err)
	}
	fmt.Fprintf(con.out, "%s\n", data)
	return nil
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// showRaw renders a payload: as text when it is printable UTF-8, otherwise
// as a hex dump; both bounded.
func showRaw(data []byte) string {
	cut := data[:min(len(data), rawTextBytes)]
	if utf8.Valid(cut) && !bytes.ContainsFunc(cut, func(r rune) bool { return r < 0x20 && r != '\n' && r != '\t' && r != '\r' }) {
		s := "  " + printableLines(string(cut)) + "\n"
		if len(cut) < len(data) {
			s += fmt.Sprintf("  … (%d more bytes)\n", len(data)-len(cut))
		}
		return s
	}
	hexCut := cut[:min(len(cut), 1024)]
	s := hex.Dump(hexCut)
	if len(hexCut) < len(data) {
		s += fmt.Sprintf("… (%d more bytes)\n", len(data)-len(hexCut))
	}
	return s
}

// printableLines makes each line of s printable, keeping the line breaks
// and indenting the lines after the first by two spaces.
func printableLines(s string) string {
	lines := strings.Split(strings.ReplaceAll(s, "\r\n", "\n"), "\n")
	for i, l := range lines {
		lines[i] = dlq.Printable(l, len(l))
	}
	return strings.Join(lines, "\n  ")
}
