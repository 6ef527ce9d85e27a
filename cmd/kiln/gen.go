package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kilnhq/kiln/internal/scaffold"
)

// genCmd writes new code into a checkout of Kiln; it reads no config and opens no connection.
func (a *app) genCmd() *cobra.Command {
	var root string
	cmd := &cobra.Command{
		Use:   "gen",
		Short: "Write what a new resource, job kind or LLM provider needs into this checkout",
		// Generating needs no config: it only writes files.
		PersistentPreRunE: func(*cobra.Command, []string) error { return nil },
	}
	cmd.PersistentFlags().StringVar(&root, "dir", ".", "the top of the Kiln checkout to write into")

	var fields []string
	var orgScoped bool
	resource := &cobra.Command{
		Use:   "resource NAME [--field name:type …] [--org-scoped]",
		Short: "A CRUD resource: spec, migration, queries, domain package, handlers and tests",
		Long: "Writes a CRUD resource in Kiln's style: its paths and schemas merged into openapi/openapi.yaml,\n" +
			"a migration, sqlc queries, a domain package internal/NAME (audited, cursor-paged), thin\n" +
			"handlers in server/ and tests against the real database, and wires the service into the\n" +
			"server and cmd/kiln. Then run `make generate`.\n\n" +
			"NAME and field names are snake_case; field types: " + strings.Join(scaffold.FieldTypes, ", ") + ".\n" +
			"--org-scoped: each row belongs to an org (members read and change it); without it the\n" +
			"resource is platform-wide (anyone signed in reads it, platform admins change it).",
		Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			r := scaffold.Resource{Name: args[0], OrgScoped: orgScoped}
			for _, s := range fields {
				f, err := scaffold.ParseField(s)
				if err != nil {
					return err
				}
				r.Fields = append(r.Fields, f)
			}
			p, err := scaffold.PlanResource(root, r)
			if err != nil {
				return err
			}
			return a.writePlan(p)
		},
	}
	resource.Flags().StringArrayVar(&fields, "field", nil, "a field, name:type (repeat the flag for each)")
	resource.Flags().BoolVar(&orgScoped, "org-scoped", false, "each row belongs to an org")
	job := &cobra.Command{
		Use:   "job NAME",
		Short: "A job kind: its payload, retry policy and handler in worker/, with its test",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			p, err := scaffold.PlanJob(root, args[0])
			if err != nil {
				return err
			}
			return a.writePlan(p)
		},
	}
	provider := &cobra.Command{
		Use:   "provider NAME",
		Short: "An LLM provider adapter under internal/llm, speaking the OpenAI-compatible wire format to start with",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			p, err := scaffold.PlanProvider(root, args[0])
			if err != nil {
				return err
			}
			return a.writePlan(p)
		},
	}
	cmd.AddCommand(resource, job, provider)
	return cmd
}

// writePlan writes a generator's files and says what is left to do.
func (a *app) writePlan(p *scaffold.Plan) error {
	if err := p.Write(); err != nil {
		return err
	}
	for _, c := range p.Changes {
		verb := "changed"
		if c.New {
			verb = "created"
		}
		fmt.Fprintf(a.stdout, "%-8s %s\n", verb, c.Path)
	}
	fmt.Fprintln(a.stdout, "\nNext:")
	for _, s := range p.Next {
		fmt.Fprintln(a.stdout, "  "+s)
	}
	return nil
}
