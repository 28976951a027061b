// Package docs holds no code: its tests check that the repository's documents match the
// code they describe (ARCHITECTURE.md's package table names exactly the packages of
// `go list ./...`).
package docs
