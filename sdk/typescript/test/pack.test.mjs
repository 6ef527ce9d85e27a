// The package as people install it: `npm pack` in a clean copy of the sources (no dist/:
// the prepare script builds it) makes a tarball that installs into a project of its own and type-checks there, declarations
// included (no skipLibCheck), under strict and exactOptionalPropertyTypes. The install
// reaches no registry: the project's lockfile names the tarball and the SDK's own locked
// dependencies, which `npm ci` of this package has put in npm's cache.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { cp, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, test } from "node:test";
import { promisify } from "node:util";

const run = promisify(execFile);
const packageDir = path.resolve(import.meta.dirname, "..");
const tsc = path.join(packageDir, "node_modules", ".bin", "tsc");
let dir;

after(async () => {
  if (dir) {
    await rm(dir, { recursive: true, force: true });
  }
});

test("npm pack makes a tarball that installs offline and type-checks in a strict project", async () => {
  dir = await mkdtemp(path.join(tmpdir(), "kiln-sdk-pack-"));
  const pkg = JSON.parse(await readFile(path.join(packageDir, "package.json"), "utf8"));
  assert.equal(pkg.private, undefined, "a private package cannot be published");

  // A copy, so that the build on prepare starts from nothing and leaves the dist/ the
  // other tests import alone.
  const sources = path.join(dir, "sdk");
  for (const name of ["package.json", "package-lock.json", ".npmrc", "tsconfig.json", "README.md", "src"]) {
    await cp(path.join(packageDir, name), path.join(sources, name), { recursive: true });
  }
  await symlink(path.join(packageDir, "node_modules"), path.join(sources, "node_modules"));
  const { stdout } = await run("npm", ["pack", "--json", "--pack-destination", dir], { cwd: sources });
  const [packed] = JSON.parse(stdout.slice(stdout.indexOf("[")));
  const files = packed.files.map((f) => f.path);
  for (const want of ["package.json", "README.md", "dist/index.js", "dist/index.d.ts", "dist/schema.d.ts", "dist/models.d.ts"]) {
    assert.ok(files.includes(want), `the tarball lacks ${want}: ${files.join(", ")}`);
  }
  const tarball = path.join(dir, packed.filename);

  const project = path.join(dir, "app");
  await mkdir(project);
  const dependency = `file:${tarball}`;
  const lock = JSON.parse(await readFile(path.join(packageDir, "package-lock.json"), "utf8"));
  const packages = {
    "": { name: "app", dependencies: { [pkg.name]: dependency } },
    [`node_modules/${pkg.name}`]: {
      version: pkg.version,
      resolved: dependency,
      integrity: `sha512-${createHash("sha512").update(await readFile(tarball)).digest("base64")}`,
      license: pkg.license,
      dependencies: pkg.dependencies,
    },
  };
  for (const [name, entry] of Object.entries(lock.packages)) {
    if (name.startsWith("node_modules/") && !entry.dev) {
      packages[name] = entry;
    }
  }
  await writeFile(
    path.join(project, "package.json"),
    JSON.stringify({ name: "app", private: true, type: "module", dependencies: { [pkg.name]: dependency } }),
  );
  await writeFile(path.join(project, "package-lock.json"), JSON.stringify({ name: "app", lockfileVersion: 3, requires: true, packages }));
  await run("npm", ["ci", "--offline", "--no-audit", "--no-fund", "--loglevel=error"], { cwd: project });

  await writeFile(
    path.join(project, "tsconfig.json"),
    JSON.stringify({
      compilerOptions: {
        target: "ES2022",
        module: "NodeNext",
        strict: true,
        exactOptionalPropertyTypes: true,
        noUncheckedIndexedAccess: true,
        types: [],
        lib: ["ES2022", "DOM"],
        noEmit: true,
      },
      include: ["app.ts"],
    }),
  );
  await writeFile(
    path.join(project, "app.ts"),
    `import { createKilnClient, KilnProblemError, unwrap, type Conversation, type Me } from "@kiln/sdk";

const kiln = createKilnClient({ baseUrl: "http://127.0.0.1:8080", token: undefined });

export async function me(): Promise<Me> {
  return unwrap(kiln.GET("/v1/me"));
}

export async function firstConversation(): Promise<Conversation | undefined> {
  try {
    const page = await unwrap(kiln.GET("/v1/conversations", { params: { query: { limit: 1 } } }));
    return page.data[0];
  } catch (err) {
    if (err instanceof KilnProblemError && err.code === "not_found") {
      return undefined;
    }
    throw err;
  }
}
`,
  );
  await run(tsc, ["--project", project]).catch((err) => assert.fail(`tsc in the installing project:\n${err.stdout}${err.stderr}`));

  const { stdout: loaded } = await run(
    "node",
    ["--input-type=module", "-e", `const sdk = await import("@kiln/sdk"); console.log(typeof sdk.createKilnClient, typeof sdk.unwrap);`],
    { cwd: project },
  );
  assert.equal(loaded.trim(), "function function");
});
