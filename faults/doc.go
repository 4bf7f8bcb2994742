// Package faults holds orderd's published fault suite (its _test.go
// files): a real MariaDB, in-process orderd servers, the Go client with its
// retries, and toxiproxy embedded in-process on two links, client ↔ orderd
// and orderd ↔ MySQL. Each scenario injects a fault, lets clients retry
// with the same token, and then checks the invariants of exactly-once
// placement (see invariants_test.go). ORDERD_FAULT_SOAK sets how long the
// randomized run lasts (default 4s).
package faults
