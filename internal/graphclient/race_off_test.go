//go:build !race

package graphclient

// raceMemoryFactor is 1 without the race detector; see race_on_test.go.
const raceMemoryFactor = 1
