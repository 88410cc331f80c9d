package dlq

import (
	"context"
	"fmt"
)

// Purge deletes recs from the store in order, calling step after each, and
// stops at the first failure or when ctx ends. It returns how many it
// deleted.
func (s *Store) Purge(ctx context.Context, recs []Record, step func(Record)) (int, error) {
	done := 0
	for _, rec := range recs {
		if err := ctx.Err(); err != nil {
			return done, fmt.Errorf("purge: %w", err)
		}
		if err := s.Delete(ctx, rec.Seq); err != nil {
			return done, fmt.Errorf("purge: %w", err)
		}
		done++
		if step != nil {
			step(rec)
		}
	}
	return done, nil
}
