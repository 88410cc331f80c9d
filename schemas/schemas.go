// Package schemas embeds the published JSON Schemas, so that tools built
// from this repository (consumer send) validate against the very files
// producers read, not a copy.
package schemas

import (
	"embed"
	"fmt"
)

// files holds the schema documents; embed needs a package-level variable.
//
//go:embed *.schema.json
var files embed.FS

// The schema files' names.
const (
	FollowRequestFile = "follow-request.v1.schema.json"
	DeadLetterFile    = "dead-letter.v1.schema.json"
)

// Read returns the schema document called name (FollowRequestFile or
// DeadLetterFile).
func Read(name string) ([]byte, error) {
	b, err := files.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("read schema %s: %w", name, err)
	}
	return b, nil
}
