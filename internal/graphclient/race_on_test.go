//go:build race

package graphclient

// raceMemoryFactor is how much more memory a process needs under the race
// detector, which keeps shadow memory for every heap byte (5–10× by Go's
// documentation): memory bounds in tests are scaled by it.
const raceMemoryFactor = 5
