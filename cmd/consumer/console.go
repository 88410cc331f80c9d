package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// console is where an operator's command talks to its operator: prompts
// and progress bars only when stdin and stdout are both terminals, so
// cron, systemd and pipes get plain lines and never a question.
type console struct {
	in       io.Reader
	out, err io.Writer
	terminal bool
}

// newConsole detects terminals on *os.File only; tests pass buffers, or
// set terminal themselves.
func newConsole(in io.Reader, out, err io.Writer) console {
	return console{in: in, out: out, err: err, terminal: isTerminal(in) && isTerminal(out)}
}

func isTerminal(v any) bool {
	f, ok := v.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// confirm asks question on the terminal and says whether the answer was
// yes; off a terminal it asks nothing and returns an error naming --yes.
func (c console) confirm(what, question string) error {
	if !c.terminal {
		return fmt.Errorf("%s: stdin and stdout are not a terminal, so nothing was asked and nothing changed; pass --yes to go ahead", what)
	}
	fmt.Fprintf(c.out, "%s [y/N] ", question)
	answer, err := bufio.NewReader(c.in).ReadString('\n')
	if err != nil && answer == "" {
		return fmt.Errorf("%s: no answer: %w", what, err)
	}
	switch strings.ToLower(strings.TrimSpace(answer)) {
	case "y", "yes":
		return nil
	}
	return fmt.Errorf("%s: not confirmed; nothing changed", what)
}

// meter shows a long operation's progress: a bar on a terminal, otherwise
// a line on stderr about every tenth of the way.
type meter struct {
	c           console
	what        string
	total, done int
	bar         *progressbar.ProgressBar
}

func (c console) meter(what string, total int) *meter {
	m := &meter{c: c, what: what, total: total}
	if c.terminal && total > 1 {
		m.bar = progressbar.NewOptions(total, progressbar.OptionSetWriter(c.err), progressbar.OptionSetDescription(what),
			progressbar.OptionShowCount(), progressbar.OptionClearOnFinish(), progressbar.OptionThrottle(0))
	}
	return m
}

func (m *meter) add() {
	m.done++
	if m.bar != nil {
		if err := m.bar.Add(1); err != nil {
			// The terminal went away: fall back to lines.
			m.bar = nil
			fmt.Fprintf(m.c.err, "%s: progress bar: %v\n", m.what, err)
		}
		return
	}
	if every := max(1, m.total/10); m.done%every == 0 || m.done == m.total {
		fmt.Fprintf(m.c.err, "%s: %d/%d\n", m.what, m.done, m.total)
	}
}

func (m *meter) finish() {
	if m.bar != nil {
		if err := m.bar.Finish(); err != nil {
			fmt.Fprintf(m.c.err, "%s: progress bar: %v\n", m.what, err)
		}
	}
}
