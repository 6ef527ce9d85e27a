package main

import (
	"fmt"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/kilnhq/kiln/internal/prompts"
	"github.com/kilnhq/kiln/internal/seed"
	"github.com/kilnhq/kiln/internal/store"
)

func (a *app) seedCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "seed", Short: "Load seed data (orgs, users, API keys, prompts, flags, plans, knowledge bases) from a YAML file"}
	var dryRun bool
	apply := &cobra.Command{
		Use:   "apply FILE.yaml",
		Short: "Create what FILE describes and is missing; --dry-run lists what would change",
		Long: "Applies a seed file through Kiln's domain services. Idempotent: what exists is left as it is,\n" +
			"so applying a file twice changes nothing. A new API key's secret is printed once.\n" +
			"The format is described in the README (\"Seed data\") and deploy/seed/demo.yaml.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			data, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			f, err := seed.Parse(args[0], data)
			if err != nil {
				return err
			}
			d, closeDeps, err := a.open(cmd.Context())
			if err != nil {
				return err
			}
			defer closeDeps()
			st := store.New(d.pool)
			// Documents are added through the knowledge-base service: their ingestion jobs
			// are queued with them and run on the worker (kiln serve's, or kiln worker).
			llmDeps, err := a.newLLM(cmd.Context(), st, d.keyring, d.rdb, prometheus.NewRegistry(), d.notify)
			if err != nil {
				return err
			}
			defer llmDeps.Billing.WaitAlerts()
			knowledge, err := a.newRAG(d, llmDeps)
			if err != nil {
				return err
			}
			res, err := seed.Apply(cmd.Context(), seed.Services{
				Accounts:  d.identity.Accounts,
				Members:   d.identity.Members,
				Keys:      d.identity.Keys,
				Prompts:   prompts.New(st, time.Now),
				Flags:     d.flags,
				Billing:   llmDeps.Billing,
				Knowledge: knowledge,
				Now:       time.Now,
			}, f, dryRun, a.stdout)
			if err != nil {
				return err
			}
			if dryRun {
				_, err = fmt.Fprintf(a.stdout, "seed %s (dry run, nothing changed): %d to create, %d to update, %d unchanged\n", args[0], res.Created, res.Updated, res.Unchanged)
				return err
			}
			_, err = fmt.Fprintf(a.stdout, "seed %s applied: %d created, %d updated, %d unchanged\n", args[0], res.Created, res.Updated, res.Unchanged)
			return err
		},
	}
	apply.Flags().BoolVar(&dryRun, "dry-run", false, "list what would change and change nothing")
	cmd.AddCommand(apply)
	return cmd
}
