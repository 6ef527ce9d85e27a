// The code blocks of the READMEs, so that the examples people read are the ones that are
// type-checked (`npm run typecheck`) and, for the quick start, run (test/quickstart.test.mjs).
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import path from "node:path";

const here = import.meta.dirname;
const repoRoot = path.resolve(here, "../../..");

/** The READMEs whose `ts` blocks are type-checked, by the name their examples get. */
export const readmes = {
  README: path.join(repoRoot, "README.md"),
  "sdk-README": path.join(repoRoot, "sdk/typescript/README.md"),
};

/** The marker, on the line before a fence, of a block the quick start test runs. */
const runMarker = "<!-- readme-test: run -->";

/**
 * The fenced code blocks of the markdown file at `file`: `{ lang, line, run, code }`, with
 * `line` the fence's line (1-based) and `run` whether the line before it is the run marker.
 */
export async function codeBlocks(file) {
  const lines = (await readFile(file, "utf8")).split("\n");
  const blocks = [];
  for (let i = 0; i < lines.length; i++) {
    const open = /^```(\w*)\s*$/.exec(lines[i]);
    if (!open) {
      continue;
    }
    const start = i;
    const body = [];
    for (i++; i < lines.length && !/^```\s*$/.test(lines[i]); i++) {
      body.push(lines[i]);
    }
    if (i === lines.length) {
      throw new Error(`${file}:${start + 1}: a code block is never closed`);
    }
    blocks.push({ lang: open[1], line: start + 1, run: lines[start - 1]?.trim() === runMarker, code: `${body.join("\n")}\n` });
  }
  return blocks;
}

/** The directory the examples are written to (ignored by git), beside the tsconfigs including it. */
export const examplesDir = path.join(here, "examples");

/**
 * Writes every `ts` block of the READMEs to examples/<name>-L<line>.ts, exactly as it
 * is, and returns `{ file, run }` for each. A block must be a module (import what it
 * uses), so that the examples do not share one global scope.
 */
export async function writeExamples() {
  await rm(examplesDir, { recursive: true, force: true });
  await rm(path.join(here, "dist"), { recursive: true, force: true });
  await mkdir(examplesDir, { recursive: true });
  const written = [];
  for (const [name, file] of Object.entries(readmes)) {
    for (const block of await codeBlocks(file)) {
      if (block.lang !== "ts") {
        continue;
      }
      if (!/^(import|export) /m.test(block.code)) {
        throw new Error(`${file}:${block.line}: a ts example must import what it uses (a module, not a script)`);
      }
      const out = path.join(examplesDir, `${name}-L${block.line}.ts`);
      await writeFile(out, block.code);
      written.push({ file: out, run: block.run });
    }
  }
  return written;
}

if (process.argv[1] === import.meta.filename) {
  const written = await writeExamples();
  console.log(`readme-check: ${written.length} TypeScript examples written to ${path.relative(process.cwd(), examplesDir)}`);
}
