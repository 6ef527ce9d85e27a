//go:build !kilntest

package main

import (
	"github.com/kilnhq/kiln/internal/jobs"
	"github.com/kilnhq/kiln/internal/store"
)

// registerTestKinds registers nothing: the test job kinds exist only in a binary built
// with -tags kilntest (testkinds.go), which the durability tests of this package build.
func registerTestKinds(*jobs.Registry, *store.Store) {}
