// What the README's shorter examples take from the examples before them or from the
// reader's program; the examples themselves are type-checked exactly as they are written.
import type { AuthSession, KilnClient, TokenPair } from "@kiln/sdk";

declare global {
  /** The server's root URL. */
  const baseUrl: string;
  /** A client made with createKilnClient, as in the first example. */
  const kiln: KilnClient;
  /** A signed-in user's session. */
  const session: AuthSession;
  /** The credentials of a sign-in form. */
  const email: string;
  const password: string;
  /** Where the program keeps a user's tokens. */
  function save(tokens: TokenPair): void;
  /** A conversation created earlier. */
  const conversationId: string;
  /** Cancels a request. */
  const signal: AbortSignal;
}
