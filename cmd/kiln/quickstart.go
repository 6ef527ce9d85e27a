package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/kilnhq/kiln/internal/audit"
	"github.com/kilnhq/kiln/internal/auth/account"
	"github.com/kilnhq/kiln/internal/auth/apikey"
	"github.com/kilnhq/kiln/internal/errs"
	"github.com/kilnhq/kiln/internal/platform/logging"
	"github.com/kilnhq/kiln/internal/platform/redisclient"
	"github.com/kilnhq/kiln/internal/store"
)

// quickstartUserAgent names the command in the audit log of what it does.
const quickstartUserAgent = "kiln quickstart"

// quickstartCmd takes a new developer from nothing to an API key in one command: it signs
// an account up (as POST /v1/auth/signup does) and creates an API key of its personal org
// (as POST /v1/api-keys does), through the same domain services, audited the same way.
// Only the key goes to stdout, so that `export KILN_API_KEY=$(kiln quickstart …)` works;
// what was created, and a generated password, go to stderr.
func (a *app) quickstartCmd() *cobra.Command {
	var email, password, name, keyName string
	var scopes []string
	cmd := &cobra.Command{
		Use:   "quickstart --email E",
		Short: "Create an account and an API key of its personal org, and print the key",
		Long: "Creates an account (with a generated password unless --password is given) and an API key of its\n" +
			"personal org, and prints the key on stdout. For an existing account, give its --password: a new key\n" +
			"is created for it.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.quickstart(cmd.Context(), cmd.ErrOrStderr(), quickstartRequest{
				email: email, password: password, name: name, keyName: keyName, scopes: scopes,
			})
		},
	}
	cmd.Flags().StringVar(&email, "email", "", "the account's email (required)")
	cmd.Flags().StringVar(&password, "password", "", "the account's password (default: a generated one, printed on stderr)")
	cmd.Flags().StringVar(&name, "name", "", "the account's display name")
	cmd.Flags().StringVar(&keyName, "key-name", "quickstart", "the API key's name")
	cmd.Flags().StringSliceVar(&scopes, "scope", []string{apikey.ScopeChat}, "the API key's scopes: "+strings.Join(apikey.Scopes, ", "))
	_ = cmd.MarkFlagRequired("email")
	return cmd
}

type quickstartRequest struct {
	email, password, name, keyName string
	scopes                         []string
}

// quickstart signs req.email up, or signs in with req.password when the account exists,
// and creates the key. The session either needs is revoked at once: the command keeps no
// login, only the key.
func (a *app) quickstart(ctx context.Context, stderr io.Writer, req quickstartRequest) error {
	if err := apikey.ValidateScopes(req.scopes); err != nil {
		return err // before the account exists: no account is left without its key
	}
	pool, err := store.Open(ctx, a.cfg.Database.URL, 2)
	if err != nil {
		return err
	}
	defer pool.Close()
	rdb, err := redisclient.Open(ctx, a.cfg.Redis.URL, 0)
	if err != nil {
		return err
	}
	defer func() { _ = rdb.Close() }()
	// stdout carries the key alone.
	log := logging.New(stderr, a.cfg.Log.Level)
	st := store.New(pool)
	accounts := a.newAccounts(st, log)
	keys := a.newAPIKeys(st, rdb, log)

	generated := req.password == ""
	if generated {
		req.password = rand.Text()
	}
	client := account.Client{UserAgent: quickstartUserAgent}
	user, session, _, err := accounts.SignUp(ctx, req.email, req.password, req.name, client)
	created := err == nil
	if errs.CodeOf(err) == errs.Conflict {
		if generated {
			return fmt.Errorf("an account with email %s exists: give its --password to create another key for it", strings.TrimSpace(req.email))
		}
		user, session, _, err = accounts.Login(ctx, req.email, req.password, client)
	}
	if err != nil {
		return err
	}
	if err := accounts.RevokeSession(ctx, user.ID, session.ID); err != nil {
		return fmt.Errorf("end the command's session: %w", err)
	}
	by := audit.Actor{UserAgent: quickstartUserAgent}.As(user.ID)
	key, secret, err := keys.Create(ctx, user.PersonalOrgID, by, req.keyName, req.scopes, nil, nil)
	if err != nil {
		return err
	}

	if created {
		fmt.Fprintf(stderr, "Created the account %s", user.Email)
		if generated {
			fmt.Fprintf(stderr, " with the password %s (keep it to sign in)", req.password)
		}
		fmt.Fprintln(stderr, ".")
	}
	fmt.Fprintf(stderr, "Created the API key %q (scopes %s) of org %s; the key is on stdout, and shown this once.\n",
		key.Name, strings.Join(key.Scopes, ", "), user.PersonalOrgID)
	_, err = fmt.Fprintln(a.stdout, secret)
	return err
}
