package config

import (
	"fmt"
	"io"
	"strings"
)

// Usage writes the help of `consumer run`: every setting with its flag,
// environment variable, default and meaning, generated from the settings
// table.
func Usage(w io.Writer) {
	var b strings.Builder
	b.WriteString(`Usage: consumer run [flags]

Consumes follow/unfollow requests from NATS JetStream and applies them to
Microsoft Graph. Each setting is taken from its flag, else from its
environment variable (an empty one counts as unset), else from its default.
Durations use Go syntax (500ms, 30s, 1h); booleans are true, false, 1 or 0.

Settings:
`)
	for _, s := range Settings() {
		def := "default " + s.Default
		switch {
		case s.Required:
			def = "required"
		case s.Default == "":
			def = "no default"
		}
		if s.Flag == "" {
			fmt.Fprintf(&b, "  %s %s (environment only, %s)\n", s.Env, s.Type, def)
		} else {
			placeholder := " " + s.Type
			if s.Type == "bool" {
				placeholder = "[=bool]"
			}
			fmt.Fprintf(&b, "  --%s%s (%s, %s)\n", s.Flag, placeholder, s.Env, def)
		}
		fmt.Fprintf(&b, "        %s\n", s.Description)
	}
	// Help goes to a terminal or a buffer; a failed write leaves nothing to do.
	if _, err := io.WriteString(w, b.String()); err != nil {
		return
	}
}
