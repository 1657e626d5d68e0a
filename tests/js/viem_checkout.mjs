// A buyer's checkout through viem against a running Cardless system, with no Cardless code:
// catalogue -> quote -> approve + pay signed locally (viem estimates gas and fees) -> OrderPaid
// decoded from the receipt -> poll the escrow's logs until OrderSettled for the order appears.
//
// Environment: CARDLESS_RPC_URL (the chain's JSON-RPC), CARDLESS_GATEWAY_URL (the gateway),
// optional CARDLESS_BUYER_KEY (default dev key 3), CARDLESS_SETTLE_TIMEOUT_S (default 60).
// Prints one JSON line {"result": "settled", ...} last and exits 0; on any failure prints
// {"result": "failed", "error": ...} and exits 1.

import { readFileSync } from 'node:fs'
import { createPublicClient, createWalletClient, http, parseEventLogs, getAddress } from 'viem'
import { privateKeyToAccount } from 'viem/accounts'
import { foundry } from 'viem/chains'

const escrowArtifact = JSON.parse(
  readFileSync(new URL('../../contracts/build/CardlessEscrow.json', import.meta.url), 'utf8'),
)

function env(name, fallback) {
  const value = process.env[name] ?? fallback
  if (value === undefined || value === '') throw new Error(`${name} is not set`)
  return value
}

async function gateway(base, path, init) {
  const response = await fetch(new URL(path, base), init)
  const body = await response.json().catch(() => null)
  if (!response.ok) throw new Error(`${init?.method ?? 'GET'} ${path}: HTTP ${response.status} ${JSON.stringify(body)}`)
  return body
}

async function main() {
  const rpcUrl = env('CARDLESS_RPC_URL')
  const gatewayUrl = env('CARDLESS_GATEWAY_URL')
  const buyerKey = env('CARDLESS_BUYER_KEY', '0x' + (3).toString(16).padStart(64, '0'))
  const settleTimeoutMs = Number(env('CARDLESS_SETTLE_TIMEOUT_S', '60')) * 1000

  // foundry is viem's built-in dev chain (id 31337): the dev node must be that chain.
  const transport = http(rpcUrl, { retryCount: 0 })
  const client = createPublicClient({ chain: foundry, transport, pollingInterval: 100 })
  const account = privateKeyToAccount(buyerKey)
  const wallet = createWalletClient({ account, chain: foundry, transport })

  const chainId = await client.getChainId()
  if (chainId !== foundry.id) throw new Error(`eth_chainId is ${chainId}, expected ${foundry.id}`)

  const catalogue = await gateway(gatewayUrl, '/v1/catalogue')
  if (catalogue.chain_id !== chainId) throw new Error(`gateway chain ${catalogue.chain_id} != node chain ${chainId}`)
  const sku = catalogue.skus.find((s) => s.prices.some((p) => p.token === 'tUSDC'))
  if (!sku) throw new Error('no SKU is priced in tUSDC')
  const escrow = getAddress(catalogue.escrow)

  const quote = await gateway(gatewayUrl, '/v1/quotes', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ sku: sku.id, account: '12345678', token: 'tUSDC', buyer: account.address }),
  })
  const steps = quote.transactions.map((t) => t.step).join(',')
  if (steps !== 'approve,pay') throw new Error(`unexpected quote steps ${steps}`)

  const fees = await client.estimateFeesPerGas() // eth_feeHistory / eth_maxPriorityFeePerGas + the latest block
  const sent = []
  let payReceipt
  for (const step of quote.transactions) {
    const request = { account, to: getAddress(step.to), data: step.data, value: BigInt(step.value) }
    const gas = await client.estimateGas(request)
    const hash = await wallet.sendTransaction(request) // viem fills nonce, gas and EIP-1559 fees itself
    const receipt = await client.waitForTransactionReceipt({ hash, timeout: 30_000 })
    if (receipt.status !== 'success') throw new Error(`${step.step} reverted: ${hash}`)
    const tx = await client.getTransaction({ hash })
    if (tx.type !== 'eip1559' || tx.chainId !== chainId) throw new Error(`${step.step}: sent as ${tx.type} on ${tx.chainId}`)
    sent.push({ step: step.step, hash, gasEstimate: gas.toString(), gasUsed: receipt.gasUsed.toString() })
    payReceipt = receipt
  }

  const [paid] = parseEventLogs({ abi: escrowArtifact.abi, eventName: 'OrderPaid', logs: payReceipt.logs })
  if (!paid) throw new Error('the pay receipt holds no OrderPaid event')
  if (paid.args.orderId !== quote.order_id) throw new Error(`OrderPaid for ${paid.args.orderId}, quoted ${quote.order_id}`)
  if (getAddress(paid.args.buyer) !== account.address) throw new Error(`OrderPaid buyer ${paid.args.buyer}`)

  const deadline = Date.now() + settleTimeoutMs
  let settled
  while (!settled) {
    const logs = await client.getContractEvents({
      address: escrow,
      abi: escrowArtifact.abi,
      eventName: 'OrderSettled',
      args: { orderId: quote.order_id },
      fromBlock: payReceipt.blockNumber,
    })
    settled = logs[0]
    if (!settled) {
      if (Date.now() > deadline) throw new Error(`no OrderSettled for ${quote.order_id} after ${settleTimeoutMs / 1000} s`)
      await new Promise((resolve) => setTimeout(resolve, 200))
    }
  }

  console.log(
    JSON.stringify({
      result: 'settled',
      orderId: quote.order_id,
      chainId,
      sku: sku.id,
      amount: paid.args.amount.toString(),
      maxFeePerGas: fees.maxFeePerGas.toString(),
      transactions: sent,
      settledIn: settled.transactionHash,
      receiptHash: settled.args.receiptHash,
    }),
  )
}

main().catch((error) => {
  console.log(JSON.stringify({ result: 'failed', error: String(error?.shortMessage ?? error?.message ?? error) }))
  console.error(error)
  process.exit(1)
})
