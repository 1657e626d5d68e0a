#!/usr/bin/env node
// verify-order.mjs: check one Cardless order from chain data alone, with viem and no Cardless code.
//
//   node verifier/verify-order.mjs --rpc URL --escrow ADDRESS --order 0xORDER_ID [--from-block N]
//
// Needs Node.js 20+ and the npm package viem (`npm ci` in this repository installs it). It follows
// docs/protocol.md, "Verify a settlement without Cardless code":
//   1. OrderPaid: the order; the pay calldata carries it and a quote signature by the named quote signer,
//      who was an authorised quote signer at that point (QuoteSignerSet replayed);
//   2. its end, if any: OrderSettled + FulfilmentsAttested (the settle/settleBatch calldata rebuilt into the
//      attested EIP-712 digest, signed by at least the threshold in force of distinct oracle signers, each
//      authorised then (protocol v2: k-of-n, signers strictly ascending), OrderRef = the paid order,
//      fulfilledAt <= deadline), OrderRefunded (refund calldata and its authorisations, k-of-n likewise), or
//      OrderReclaimed (after fulfilmentDeadline + SETTLEMENT_GRACE);
//   3. money: fee = amount * feeBps / 10000, merchant = amount - fee.
// Prints one JSON object ({"verified": true, ...} or {"verified": false, "error": ...}); exit 0 or 1.
// Signatures are checked with viem's verifyTypedData at the block (EOA recovery, else EIP-1271).

import {
  createPublicClient, decodeFunctionData, encodeAbiParameters, getAddress, hashTypedData, http, keccak256,
  parseAbi, parseAbiParameters, parseEventLogs,
} from 'viem'

const abi = parseAbi([
  'event OrderPaid(bytes32 indexed orderId, address indexed buyer, address indexed merchant, address token, uint256 amount, uint16 feeBps, uint48 quoteExpiry, uint48 fulfilmentDeadline, bytes32 skuHash, bytes32 accountCommitment, address quoteSigner)',
  'event OrderSettled(bytes32 indexed orderId, bytes32 receiptHash, uint48 fulfilledAt)',
  'event OrderRefunded(bytes32 indexed orderId, uint16 reasonCode, address[] signers)',
  'event OrderReclaimed(bytes32 indexed orderId, address caller)',
  'event FulfilmentsAttested(bytes32 indexed digest, address[] signers, uint256 orders)',
  'event OracleThresholdSet(uint8 threshold)',
  'event OracleSignerSet(address indexed signer, bool authorised)',
  'event QuoteSignerSet(address indexed signer, bool authorised)',
  'struct Order { bytes32 orderId; address buyer; address merchant; address token; uint256 amount; uint16 feeBps; uint48 quoteExpiry; uint48 fulfilmentDeadline; bytes32 skuHash; bytes32 accountCommitment; }',
  'struct OrderRef { bytes32 orderId; address merchant; address token; uint256 amount; uint16 feeBps; uint48 fulfilmentDeadline; bytes32 detailsHash; }',
  'struct Fulfilment { bytes32 receiptHash; uint48 fulfilledAt; }',
  'function pay(Order order, address quoteSigner, bytes quoteSignature)',
  'function payWithPermit(Order order, address quoteSigner, bytes quoteSignature, uint256 permitDeadline, uint8 v, bytes32 r, bytes32 s)',
  'function settle(OrderRef order, Fulfilment fulfilment, address[] signers, bytes[] signatures)',
  'function settleBatch(OrderRef[] orders, Fulfilment[] fulfilments, address[] signers, bytes[] signatures)',
  'function refund(Order order, uint16 reasonCode, address[] signers, bytes[] signatures)',
  'function SETTLEMENT_GRACE() view returns (uint256)',
  'function eip712Domain() view returns (bytes1 fields, string name, string version, uint256 chainId, address verifyingContract, bytes32 salt, uint256[] extensions)',
])

const ORDER_TYPE = [
  { name: 'orderId', type: 'bytes32' }, { name: 'buyer', type: 'address' }, { name: 'merchant', type: 'address' },
  { name: 'token', type: 'address' }, { name: 'amount', type: 'uint256' }, { name: 'feeBps', type: 'uint16' },
  { name: 'quoteExpiry', type: 'uint48' }, { name: 'fulfilmentDeadline', type: 'uint48' },
  { name: 'skuHash', type: 'bytes32' }, { name: 'accountCommitment', type: 'bytes32' },
]
const FULFILMENT_TYPE = [
  { name: 'orderId', type: 'bytes32' }, { name: 'receiptHash', type: 'bytes32' }, { name: 'fulfilledAt', type: 'uint48' },
]
const REFUND_TYPE = [{ name: 'orderId', type: 'bytes32' }, { name: 'reasonCode', type: 'uint16' }]

class NotVerified extends Error {}
const require = (condition, message) => { if (!condition) throw new NotVerified(message) }
const before = (a, b) =>
  a.blockNumber < b.blockNumber ||
  (a.blockNumber === b.blockNumber &&
    (a.transactionIndex < b.transactionIndex ||
      (a.transactionIndex === b.transactionIndex && a.logIndex < b.logIndex)))

function options(argv) {
  const out = { fromBlock: '0' }
  for (let i = 0; i < argv.length; i += 2) {
    const key = { '--rpc': 'rpc', '--escrow': 'escrow', '--order': 'order', '--from-block': 'fromBlock' }[argv[i]]
    if (!key || argv[i + 1] === undefined) throw new Error(`unknown or incomplete option ${argv[i]}`)
    out[key] = argv[i + 1]
  }
  for (const key of ['rpc', 'escrow', 'order']) if (!out[key]) throw new Error(`--${key} is required`)
  return out
}

async function authorisedThen(client, escrow, eventName, signer, at, fromBlock) {
  const logs = await client.getLogs({
    address: escrow, event: abi.find((x) => x.name === eventName), args: { signer }, fromBlock, toBlock: at.blockNumber,
  })
  const earlier = logs.filter((l) => before(l, at))
  return earlier.length > 0 && earlier.at(-1).args.authorised === true
}

async function thresholdThen(client, escrow, at, fromBlock) {
  const logs = await client.getLogs({
    address: escrow, event: abi.find((x) => x.name === 'OracleThresholdSet'), fromBlock, toBlock: at.blockNumber,
  })
  const earlier = logs.filter((l) => before(l, at))
  return earlier.length > 0 ? Number(earlier.at(-1).args.threshold) : 1
}

// k-of-n (protocol v2): the signers the event names are the calldata's, strictly ascending (so distinct),
// each authorised then, each signature verifies, and there are at least as many as the threshold then.
async function checkSigners(client, escrow, typed, eventSigners, callSigners, signatures, at, fromBlock, what) {
  const named = callSigners.map((a) => getAddress(a))
  require(named.length === eventSigners.length && named.every((s, i) => s === getAddress(eventSigners[i])),
    `${what} calldata signers differ from the event's`)
  require(signatures.length === named.length, `${what}: not one signature per signer`)
  for (let i = 1; i < named.length; i++)
    require(BigInt(named[i - 1]) < BigInt(named[i]), `${what} signers are not strictly ascending`)
  for (let i = 0; i < named.length; i++) {
    require(await client.verifyTypedData({ ...typed, address: named[i], signature: signatures[i], blockNumber: at.blockNumber }),
      `the ${what} signature of ${named[i]} does not verify`)
    require(await authorisedThen(client, escrow, 'OracleSignerSet', named[i], at, fromBlock),
      `${named[i]} was not an authorised oracle signer then (${what})`)
  }
  const threshold = await thresholdThen(client, escrow, at, fromBlock)
  require(named.length >= threshold, `${what}: ${named.length} signers, threshold ${threshold} in force`)
  return { signers: named, threshold }
}

async function calldata(client, escrow, hash) {
  const tx = await client.getTransaction({ hash })
  require(getAddress(tx.to) === escrow, `transaction ${hash} went through another contract: use a trace`)
  return decodeFunctionData({ abi, data: tx.input })
}

export async function verifyOrder(client, escrow, orderId, fromBlock = 0n) {
  escrow = getAddress(escrow)
  const event = (name) => abi.find((x) => x.name === name)
  const [, name, version, chainId, verifyingContract] = await client.readContract({ address: escrow, abi, functionName: 'eip712Domain' })
  require(name === 'CardlessEscrow' && getAddress(verifyingContract) === escrow, 'not a Cardless escrow')
  const domain = { name, version, chainId, verifyingContract: escrow }
  const steps = []

  // 1. the order as paid, and its quote
  const paidLogs = await client.getLogs({ address: escrow, event: event('OrderPaid'), args: { orderId }, fromBlock })
  require(paidLogs.length === 1, `expected one OrderPaid, found ${paidLogs.length}`)
  const [paid] = paidLogs
  const p = paid.args
  const order = {
    orderId, buyer: p.buyer, merchant: p.merchant, token: p.token, amount: p.amount, feeBps: p.feeBps,
    quoteExpiry: p.quoteExpiry, fulfilmentDeadline: p.fulfilmentDeadline, skuHash: p.skuHash,
    accountCommitment: p.accountCommitment,
  }
  const payCall = await calldata(client, escrow, paid.transactionHash)
  require(['pay', 'payWithPermit'].includes(payCall.functionName), 'the OrderPaid transaction is not pay')
  const [callOrder, quoteSigner, quoteSignature] = payCall.args
  for (const field of Object.keys(order)) {
    const a = callOrder[field], b = order[field]
    require(typeof a === 'string' ? a.toLowerCase() === b.toLowerCase() : a === b, `pay calldata differs in ${field}`)
  }
  require(getAddress(quoteSigner) === getAddress(p.quoteSigner), 'pay calldata names another quote signer')
  const quote = { domain, types: { Order: ORDER_TYPE }, primaryType: 'Order', message: order }
  require(await client.verifyTypedData({ ...quote, address: quoteSigner, signature: quoteSignature, blockNumber: paid.blockNumber }),
    'the quote signature does not verify')
  require(await authorisedThen(client, escrow, 'QuoteSignerSet', quoteSigner, paid, fromBlock),
    `${quoteSigner} was not an authorised quote signer when the order was paid`)
  steps.push({ step: 'quote', signer: getAddress(quoteSigner), block: Number(paid.blockNumber) })

  // 2. how it ended
  const ends = []
  for (const name of ['OrderSettled', 'OrderRefunded', 'OrderReclaimed'])
    ends.push(...(await client.getLogs({ address: escrow, event: event(name), args: { orderId }, fromBlock })))
  require(ends.length <= 1, `the order ended ${ends.length} times`)
  const fee = (p.amount * BigInt(p.feeBps)) / 10000n
  let status = 'open'
  if (ends.length === 1) {
    const [end] = ends
    if (end.eventName === 'OrderSettled') {
      status = 'settled'
      const receipt = await client.getTransactionReceipt({ hash: end.transactionHash })
      const attested = parseEventLogs({ abi, logs: receipt.logs, eventName: 'FulfilmentsAttested' })
        .filter((l) => getAddress(l.address) === escrow)
      require(attested.length === 1, 'expected one FulfilmentsAttested')
      const { functionName, args } = await calldata(client, escrow, end.transactionHash)
      require(functionName === 'settle' || functionName === 'settleBatch', 'not settle/settleBatch')
      const [refs, fulfilments] = functionName === 'settle' ? [[args[0]], [args[1]]] : [args[0], args[1]]
      const i = refs.findIndex((r) => r.orderId === orderId)
      require(i >= 0, 'the order is not in the settle calldata')
      const detailsHash = keccak256(encodeAbiParameters(parseAbiParameters('address, uint48, bytes32, bytes32'),
        [p.buyer, p.quoteExpiry, p.skuHash, p.accountCommitment]))
      const r = refs[i]
      require(getAddress(r.merchant) === getAddress(p.merchant) && getAddress(r.token) === getAddress(p.token) &&
        r.amount === p.amount && r.feeBps === p.feeBps && r.fulfilmentDeadline === p.fulfilmentDeadline &&
        r.detailsHash === detailsHash, 'settled OrderRef differs from the paid order')
      require(fulfilments[i].receiptHash === end.args.receiptHash && fulfilments[i].fulfilledAt === end.args.fulfilledAt,
        'calldata fulfilment differs from OrderSettled')
      require(end.args.fulfilledAt <= p.fulfilmentDeadline, 'fulfilled after the deadline')
      const leaf = (ref, f) => ({ orderId: ref.orderId, receiptHash: f.receiptHash, fulfilledAt: f.fulfilledAt })
      const typed = functionName === 'settle'
        ? { domain, types: { Fulfilment: FULFILMENT_TYPE }, primaryType: 'Fulfilment', message: leaf(refs[0], fulfilments[0]) }
        : { domain, types: { FulfilmentBatch: [{ name: 'fulfilments', type: 'Fulfilment[]' }], Fulfilment: FULFILMENT_TYPE },
            primaryType: 'FulfilmentBatch', message: { fulfilments: refs.map((ref, j) => leaf(ref, fulfilments[j])) } }
      require(hashTypedData(typed) === attested[0].args.digest, 'rebuilt digest differs from FulfilmentsAttested.digest')
      const { signers, threshold } = await checkSigners(
        client, escrow, typed, attested[0].args.signers, args[2], args[3], end, fromBlock, 'proof')
      steps.push({ step: 'proof', kind: functionName, signers, threshold, digest: attested[0].args.digest,
        receiptHash: end.args.receiptHash, block: Number(end.blockNumber) })
    } else if (end.eventName === 'OrderRefunded') {
      status = 'refunded'
      const { functionName, args } = await calldata(client, escrow, end.transactionHash)
      require(functionName === 'refund', 'the OrderRefunded transaction is not refund')
      require(args[0].orderId === orderId && args[1] === end.args.reasonCode, 'refund calldata differs from OrderRefunded')
      const typed = { domain, types: { Refund: REFUND_TYPE }, primaryType: 'Refund', message: { orderId, reasonCode: args[1] } }
      const { signers, threshold } = await checkSigners(
        client, escrow, typed, end.args.signers, args[2], args[3], end, fromBlock, 'refund')
      steps.push({ step: 'refund', signers, threshold, reasonCode: Number(args[1]), block: Number(end.blockNumber) })
    } else {
      status = 'reclaimed'
      const block = await client.getBlock({ blockNumber: end.blockNumber })
      const grace = await client.readContract({ address: escrow, abi, functionName: 'SETTLEMENT_GRACE' })
      require(block.timestamp > BigInt(p.fulfilmentDeadline) + grace, 'reclaimed before the settlement window closed')
      steps.push({ step: 'reclaim', caller: getAddress(end.args.caller), block: Number(end.blockNumber) })
    }
  }
  return {
    verified: true, orderId, status, steps,
    amount: p.amount.toString(), fee: status === 'settled' ? fee.toString() : '0',
    merchantAmount: status === 'settled' ? (p.amount - fee).toString() : '0',
  }
}

async function main() {
  const opts = options(process.argv.slice(2))
  const client = createPublicClient({ transport: http(opts.rpc) })
  const result = await verifyOrder(client, opts.escrow, opts.order.toLowerCase(), BigInt(opts.fromBlock))
  console.log(JSON.stringify(result))
}

main().catch((error) => {
  console.log(JSON.stringify({ verified: false, error: error.message ?? String(error) }))
  process.exit(1)
})
