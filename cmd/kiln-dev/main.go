// Command kiln-dev runs the checks of Kiln's development workflow: the commit-msg hook,
// the API breaking-change gate, the SDK version check and the changelog of a release.
// It is a tool for working on Kiln, not part of the product: `kiln` never imports it.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/kilnhq/kiln/internal/release"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := newRootCmd(os.Stdout).ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "kiln-dev:", err)
		os.Exit(1)
	}
}

func newRootCmd(stdout io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "kiln-dev",
		Short:         "Checks of Kiln's development workflow (hooks, API gate, releases)",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(commitMsgCmd(), apiCheckCmd(stdout), sdkVersionsCmd(stdout), changelogCmd(stdout))
	return root
}

func commitMsgCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "commit-msg FILE",
		Short: "Check that the commit message in FILE follows Conventional Commits (the commit-msg hook)",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			msg, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			return release.CheckMessage(string(msg))
		},
	}
}

func apiCheckCmd(stdout io.Writer) *cobra.Command {
	var base string
	cmd := &cobra.Command{
		Use:   "api-check",
		Short: "Fail on a breaking change of openapi/openapi.yaml since the last release tag (or --base) unless the major version changed",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return release.APICheck{Dir: ".", Base: base, Out: stdout}.Run(cmd.Context())
		},
	}
	cmd.Flags().StringVar(&base, "base", "", "git ref to compare with (default: the last v* tag)")
	return cmd
}

func sdkVersionsCmd(stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "sdk-versions",
		Short: "Check that the SDK versions follow the API's info.version; print the Go SDK's tag",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			v, err := release.CheckSDKVersions(".")
			if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "api=%s\ngo_sdk_tag=%s\n", v.API, v.GoSDKTag)
			return nil
		},
	}
}

func changelogCmd(stdout io.Writer) *cobra.Command {
	var from, to, version string
	cmd := &cobra.Command{
		Use:   "changelog",
		Short: "Print the Markdown changelog of the commits since the last release tag (or --from)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if from == "" {
				tag, err := release.LastTag(ctx, ".", to)
				if err != nil {
					return err
				}
				from = tag
			}
			commits, skipped, err := release.Log(ctx, ".", from, to)
			if err != nil {
				return err
			}
			fmt.Fprint(stdout, release.Changelog(version, time.Now().UTC().Format(time.DateOnly), commits, len(skipped)))
			return nil
		},
	}
	cmd.Flags().StringVar(&from, "from", "", "start after this ref (default: the last v* tag before --to; none: from the first commit)")
	cmd.Flags().StringVar(&to, "to", "HEAD", "end at this ref")
	cmd.Flags().StringVar(&version, "version", "Unreleased", "the version this changelog is for")
	return cmd
}
