//go:build !race

package main

// raceFlags build orderd like the test binary.
var raceFlags []string
