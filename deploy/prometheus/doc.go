// Package prometheus holds Kiln's recommended Prometheus alerting rules
// (alerts.yml) and their promtool unit tests (alerts_test.yml). It has no Go
// code of its own: alerts_test.go checks the rules with promtool (Debian's
// prometheus package, installed by scripts/dev-deps.sh) and checks the
// project's conventions for every alert.
package prometheus
