// Builds the pages' one bundle: frontend/src -> gateway/web/static/{app.js,app.css,build.json}.
//
//   node frontend/build.mjs          (make web)
//
// Everything the pages load comes from this bundle (preact + htm, viem for the auditor's in-browser
// verification, the verifier's own verifyOrder): no CDN, the machines are offline. The output is
// committed, so the gateway runs without npm; build.json records the SHA-256 of every input, and
// tests/browser/test_bundle.py fails when the committed bundle is older than its sources.
import { createHash } from 'node:crypto'
import { readFileSync, readdirSync, writeFileSync, copyFileSync } from 'node:fs'
import { join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import * as esbuild from 'esbuild'

const root = fileURLToPath(new URL('..', import.meta.url))
const out = join(root, 'gateway/web/static')
export const INPUTS = ['frontend/src', 'verifier/verify-order.mjs', 'package-lock.json']

function files(path) {
  const full = join(root, path)
  try {
    return readdirSync(full, { withFileTypes: true }).flatMap((e) => files(join(path, e.name)))
  } catch {
    return [path]
  }
}

export function sourcesHash() {
  const hash = createHash('sha256')
  for (const file of INPUTS.flatMap(files).sort()) {
    hash.update(file + '\0')
    hash.update(readFileSync(join(root, file)))
    hash.update('\0')
  }
  return hash.digest('hex')
}

// verifier/verify-order.mjs is a CLI as well as a module: its last lines run main() with Node's
// process. The bundle takes its verifyOrder only, cutting at `async function main()`; a verifier
// rewritten without that marker fails the build rather than shipping a CLI into the browser.
const verifierAsLibrary = {
  name: 'verifier-as-library',
  setup(build) {
    build.onLoad({ filter: /verify-order\.mjs$/ }, (args) => {
      const text = readFileSync(args.path, 'utf8')
      const cut = text.indexOf('\nasync function main()')
      if (cut < 0) throw new Error('verifier/verify-order.mjs: no `async function main()` to cut at')
      return { contents: text.slice(0, cut).replace(/^#!.*\n/, ''), loader: 'js' }
    })
  },
}

await esbuild.build({
  entryPoints: { app: join(root, 'frontend/src/main.js') },
  bundle: true,
  format: 'esm',
  target: ['chrome110', 'firefox110', 'safari16'],
  minify: true,
  legalComments: 'none',
  charset: 'utf8',
  outdir: out,
  plugins: [verifierAsLibrary],
  logLevel: 'warning',
})
copyFileSync(join(root, 'frontend/src/app.css'), join(out, 'app.css'))
copyFileSync(join(root, 'frontend/src/favicon.svg'), join(out, 'favicon.svg'))
const lock = JSON.parse(readFileSync(join(root, 'package-lock.json'), 'utf8'))
const versions = Object.fromEntries(
  ['esbuild', 'preact', 'htm', 'viem'].map((name) => [name, lock.packages[`node_modules/${name}`]?.version]),
)
writeFileSync(
  join(out, 'build.json'),
  JSON.stringify({ sources_sha256: sourcesHash(), inputs: INPUTS, packages: versions }, null, 2) + '\n',
)
console.log(`built ${relative(root, out)}/app.js`)
