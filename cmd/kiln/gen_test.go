package main_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestGenRefuses: kiln gen needs no config and explains what it refuses (internal/scaffold
// tests what it writes, and builds and tests it in a copy of the checkout).
func TestGenRefuses(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"ErrFieldWithoutType", []string{"gen", "resource", "widget", "--field", "size", "--dir", "../.."}, "write name:type"},
		{"ErrReservedName", []string{"gen", "resource", "order", "--field", "size:int", "--dir", "../.."}, "SQL reserved word"},
		{"ErrTakenTable", []string{"gen", "resource", "prompt", "--field", "size:int", "--dir", "../.."}, "table prompts already"},
		{"ErrNotACheckout", []string{"gen", "job", "report_export", "--dir", t.TempDir()}, "not the top of a Kiln checkout"},
		{"ErrProviderExists", []string{"gen", "provider", "ollama", "--dir", "../.."}, "exists already"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			cmd := exec.Command(kilnBin, c.args...)
			cmd.Env = []string{"KILN_CONFIG=/nonexistent.yaml"} // gen reads no config
			out, err := cmd.CombinedOutput()
			if err == nil || !strings.Contains(string(out), c.want) {
				t.Fatalf("kiln %s: %v\n%s\nwant an error saying %q", strings.Join(c.args, " "), err, out, c.want)
			}
		})
	}
}
