// Runs docs/protocol.md's viem recipe, extracted verbatim by tests/protocol/test_viem_recipe.py into the
// module given as argv[2], against a node: node run_viem_recipe.mjs RECIPE.mjs RPC ESCROW ORDER_ID
// Prints one JSON line: {"ok": true, ...result} or {"ok": false, "error": "..."}; exit 0 either way.
import { createPublicClient, http } from 'viem'
import { pathToFileURL } from 'node:url'

const [recipePath, rpc, escrow, orderId] = process.argv.slice(2)
const { verifySettlement } = await import(pathToFileURL(recipePath).href)
const client = createPublicClient({ transport: http(rpc) })
try {
  const result = await verifySettlement(client, escrow, orderId)
  console.log(JSON.stringify({ ok: true, ...result }, (_, v) => (typeof v === 'bigint' ? v.toString() : v)))
} catch (error) {
  console.log(JSON.stringify({ ok: false, error: String(error.message ?? error) }))
}
