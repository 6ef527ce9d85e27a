// The README's quick start, run as written against the real server: its blocks marked
// `<!-- readme-test: run -->`, the shell ones with bash and the TypeScript ones as
// compiled by `npm run typecheck` (readme-check/strict.tsconfig.json). Three things are
// replaced in the shell text, each checked to be there: `localhost:8080` by the test
// server's address, `bin/kiln` by the binary under test (KILN_BIN) and `you@example.com`
// by a new address (kiln_test is shared by every run). The TypeScript examples read the
// address from KILN_BASE_URL, as they document.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { randomUUID } from "node:crypto";
import { access } from "node:fs/promises";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";

import { codeBlocks, readmes } from "../readme-check/readme.mjs";
import { kilnBin, serverEnv, startKiln } from "./kiln-server.mjs";

const repoRoot = path.resolve(import.meta.dirname, "../../..");
const compiledDir = path.resolve(import.meta.dirname, "../readme-check/dist/examples");
const reply = "[dev] You said: Hello, Kiln";

describe("the README's quick start against kiln serve", () => {
  /** @type {Awaited<ReturnType<typeof startKiln>>} */
  let kiln;

  before(async () => {
    kiln = await startKiln();
  });

  after(async () => {
    if (kiln) {
      const { code, signal } = await kiln.stop();
      assert.equal(code, 0, `kiln serve exited with ${code ?? signal} after SIGTERM, want 0\n${kiln.logs()}`);
    }
  });

  test("runs as written: an account, its API key, and a first chat with curl, the OpenAI SDK and the Kiln SDK", async () => {
    const blocks = (await codeBlocks(readmes.README)).filter((b) => b.run);
    assert.deepEqual(
      blocks.map((b) => b.lang),
      ["sh", "sh", "ts", "ts"],
      "the quick start's marked blocks: the key, curl, the OpenAI SDK, the Kiln SDK",
    );
    const email = `quickstart-${randomUUID()}@example.com`;
    const host = new URL(kiln.baseUrl).host;
    const replacements = new Map([
      ["localhost:8080", host],
      ["bin/kiln", kilnBin],
      ["you@example.com", email],
    ]);
    const replaced = new Set();
    const script = ["set -euo pipefail"];
    for (const block of blocks) {
      script.push(`echo "::block ${block.line}"`);
      if (block.lang === "sh") {
        let text = block.code;
        for (const [from, to] of replacements) {
          if (text.includes(from)) {
            text = text.replaceAll(from, to);
            replaced.add(from);
          }
        }
        script.push(text);
      } else {
        const compiled = path.join(compiledDir, `README-L${block.line}.js`);
        await access(compiled).catch(() => assert.fail(`${compiled} is missing: run \`npm run typecheck\` first`));
        script.push(`node ${JSON.stringify(compiled)}`);
      }
    }
    assert.deepEqual([...replaced].sort(), [...replacements.keys()].sort(), "every replaced text is in the quick start");

    const { stdout, stderr } = await promisify(execFile)("bash", ["-c", script.join("\n")], {
      cwd: repoRoot,
      env: { ...serverEnv(), KILN_BASE_URL: kiln.baseUrl },
    }).catch((err) => assert.fail(`the quick start failed: ${err.message}\nstdout:\n${err.stdout}\nstderr:\n${err.stderr}`));

    assert.match(stderr, new RegExp(`Created the account ${email.replace(/[.]/g, "\\.")} with the password `));
    const outputs = stdout.split(/^::block \d+\n/m).slice(1);
    assert.equal(outputs.length, blocks.length, stdout);
    blocks.forEach((block, i) => {
      // Each chat request of a block ("Hello, Kiln") prints the dev model's reply.
      const want = block.code.split("Hello, Kiln").length - 1;
      const got = outputs[i].split(reply).length - 1;
      assert.equal(got, want, `README.md:${block.line} printed ${got} replies, want ${want}:\n${outputs[i]}\nstderr:\n${stderr}`);
    });
  });
});
