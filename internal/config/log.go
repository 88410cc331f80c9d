package config

import (
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/rs/zerolog"
)

// MarshalZerologObject writes every setting as a field, for the start-up log
// line, with the client secret and NATS URL credentials redacted.
func (c Config) MarshalZerologObject(e *zerolog.Event) {
	for _, s := range table() {
		e.Str(s.key(), s.display(&c))
	}
}

// MarshalJSON renders the same redacted settings as MarshalZerologObject,
// so encoding a Config for diagnostics cannot leak credentials.
func (c Config) MarshalJSON() ([]byte, error) {
	m := make(map[string]string)
	for _, s := range table() {
		m[s.key()] = s.display(&c)
	}
	return json.Marshal(m)
}

// NewLogger returns a logger writing to w at c.LogLevel, as JSON lines or,
// with LogFormat console, as human-readable text, each line timestamped.
func NewLogger(c Config, w io.Writer) (zerolog.Logger, error) {
	level, err := parseLevel(c.LogLevel)
	if err != nil {
		return zerolog.Nop(), fmt.Errorf("new logger: %w", err)
	}
	switch c.LogFormat {
	case "json":
	case "console":
		w = zerolog.ConsoleWriter{Out: w, NoColor: true, TimeFormat: time.RFC3339}
	default:
		return zerolog.Nop(), fmt.Errorf("new logger: unknown log format %q", c.LogFormat)
	}
	// Goroutines log concurrently and not every writer is safe for that.
	return zerolog.New(zerolog.SyncWriter(w)).Level(level).With().Timestamp().Logger(), nil
}

// parseLevel accepts only the levels the help text offers; zerolog's own
// parser also takes "fatal", "panic", "disabled" and "".
func parseLevel(s string) (zerolog.Level, error) {
	switch s {
	case "trace":
		return zerolog.TraceLevel, nil
	case "debug":
		return zerolog.DebugLevel, nil
	case "info":
		return zerolog.InfoLevel, nil
	case "warn":
		return zerolog.WarnLevel, nil
	case "error":
		return zerolog.ErrorLevel, nil
	}
	return zerolog.NoLevel, fmt.Errorf("unknown log level %q", s)
}
