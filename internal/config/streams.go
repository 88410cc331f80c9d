package config

import (
	"flag"
	"fmt"
)

// Streams names what the dead-letter tool works on: the request stream
// replays are published into and the dead-letter stream, as the consumer
// is configured to use them.
type Streams struct {
	// Stream is the request stream (SITEFOLLOW_STREAM).
	Stream string
	// DLQStream is the dead-letter stream (SITEFOLLOW_DLQ_STREAM).
	DLQStream string
}

// BindStreams registers the stream settings' flags (--stream,
// --dlq-stream) on fs, like BindNATS: once fs is parsed, the function it
// returns resolves them (flag > environment > default) and validates them,
// reading no other setting.
func BindStreams(fs *flag.FlagSet, getenv func(string) string) func() (Streams, error) {
	streams := bindFlags(fs, func(s *spec) bool { return s.Flag == "stream" || s.Flag == "dlq-stream" })
	return func() (Streams, error) {
		c, err := streams.resolve(getenv)
		if err != nil {
			return Streams{}, fmt.Errorf("stream settings: %w", err)
		}
		return Streams{Stream: c.Stream, DLQStream: c.DLQStream}, nil
	}
}
