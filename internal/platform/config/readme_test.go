package config_test

import (
	"os"
	"strings"
	"testing"

	"github.com/kilnhq/kiln/internal/platform/config"
)

// TestReadmeListsEveryKey keeps the README's configuration table complete.
func TestReadmeListsEveryKey(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("../../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range config.Keys() {
		row := "| `" + k.Path + "` |"
		if !strings.Contains(string(readme), row) {
			t.Errorf("README.md has no row for %s", k.Path)
		}
		if k.Env != "" && !strings.Contains(string(readme), "`"+k.Env+"`") {
			t.Errorf("README.md does not name %s", k.Env)
		}
	}
}
