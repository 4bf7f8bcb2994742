//go:build race

package main

// raceFlags build orderd like the test binary, reusing the race-instrumented
// packages that go test -race compiles anyway.
var raceFlags = []string{"-race"}
