import { decodeFunctionResult, encodeFunctionData, parseAbi, parseSignature } from 'viem'

// The buyer's wallet through EIP-1193 (window.ethereum): accounts, chain, transactions, signatures.
// Wallet errors become WalletError with a kind the page turns into a clear message:
//   rejected (4001: the user declined), chain (wrong network), funds (insufficient balance), other.
export class WalletError extends Error {
  constructor(kind, message, cause) {
    super(message)
    this.kind = kind
    this.cause = cause
  }
}

export const provider = () => window.ethereum ?? null

function classify(error) {
  const code = error?.code ?? error?.data?.code
  const message = String(error?.message ?? error)
  if (code === 4001 || /user (rejected|denied)/i.test(message)) return new WalletError('rejected', message, error)
  if (code === 4902 || code === 4901) return new WalletError('chain', message, error)
  if (/insufficient funds/i.test(message)) return new WalletError('funds', message, error)
  return new WalletError('other', message, error)
}

export async function request(method, params) {
  const eth = provider()
  if (!eth) throw new WalletError('missing', 'no EIP-1193 provider')
  try {
    return await eth.request(params === undefined ? { method } : { method, params })
  } catch (error) {
    throw classify(error)
  }
}

export async function connect() {
  const accounts = await request('eth_requestAccounts')
  if (!accounts?.length) throw new WalletError('rejected', 'no account shared')
  return accounts[0]
}

export async function chainId() {
  return Number(BigInt(await request('eth_chainId')))
}

export async function switchChain(id, rpcUrl) {
  const hex = '0x' + id.toString(16)
  try {
    await request('wallet_switchEthereumChain', [{ chainId: hex }])
  } catch (error) {
    if (error.kind !== 'chain' || !rpcUrl) throw error
    await request('wallet_addEthereumChain', [{
      chainId: hex, chainName: `Cardless dev chain ${id}`, rpcUrls: [rpcUrl],
      nativeCurrency: { name: 'Ether', symbol: 'ETH', decimals: 18 },
    }])
  }
}

const pad = (hex) => hex.replace(/^0x/, '').toLowerCase().padStart(64, '0')

export async function tokenBalance(token, owner) {
  if (/^0x0{40}$/i.test(token)) return BigInt(await request('eth_getBalance', [owner, 'latest']))
  // balanceOf(address): selector 0x70a08231
  const data = '0x70a08231' + pad(owner)
  return BigInt(await request('eth_call', [{ to: token, data }, 'latest']))
}

export async function allowance(token, owner, spender) {
  // allowance(address,address): selector 0xdd62ed3e
  const data = '0xdd62ed3e' + pad(owner) + pad(spender)
  return BigInt(await request('eth_call', [{ to: token, data }, 'latest']))
}

export async function chainTime() {
  const block = await request('eth_getBlockByNumber', ['latest', false])
  return Number(BigInt(block.timestamp))
}

export async function ethBalance(owner) {
  return BigInt(await request('eth_getBalance', [owner, 'latest']))
}

export async function sendTransaction(from, step) {
  return request('eth_sendTransaction', [{
    from, to: step.to, data: step.data, value: '0x' + BigInt(step.value).toString(16),
  }])
}

export async function waitForReceipt(hash, { timeoutMs = 120_000, intervalMs = 250 } = {}) {
  const end = Date.now() + timeoutMs
  while (Date.now() < end) {
    const receipt = await request('eth_getTransactionReceipt', [hash])
    if (receipt) return receipt
    await new Promise((r) => setTimeout(r, intervalMs))
  }
  throw new WalletError('other', `no receipt for ${hash} after ${timeoutMs / 1000} s`)
}

export async function personalSign(address, text) {
  const bytes = new TextEncoder().encode(text)
  const hex = '0x' + [...bytes].map((b) => b.toString(16).padStart(2, '0')).join('')
  return request('personal_sign', [hex, address])
}

const TOKEN_ABI = parseAbi([
  'function eip712Domain() view returns (bytes1 fields, string name, string version, uint256 chainId, address verifyingContract, bytes32 salt, uint256[] extensions)',
  'function nonces(address owner) view returns (uint256)',
])

async function readToken(token, functionName, args = []) {
  const data = encodeFunctionData({ abi: TOKEN_ABI, functionName, args })
  const result = await request('eth_call', [{ to: token, data }, 'latest'])
  return decodeFunctionResult({ abi: TOKEN_ABI, functionName, data: result })
}

// An EIP-2612 permit for spender = the escrow, signed with eth_signTypedData_v4; the token's own
// EIP-712 domain (ERC-5267 eip712Domain) and nonce are read through the wallet.
export async function signPermit({ owner, token, spender, value, deadline }) {
  const [, name, version, chainIdOnToken, verifyingContract] = await readToken(token, 'eip712Domain')
  const nonce = await readToken(token, 'nonces', [owner])
  const typed = {
    types: {
      EIP712Domain: [
        { name: 'name', type: 'string' }, { name: 'version', type: 'string' },
        { name: 'chainId', type: 'uint256' }, { name: 'verifyingContract', type: 'address' },
      ],
      Permit: [
        { name: 'owner', type: 'address' }, { name: 'spender', type: 'address' }, { name: 'value', type: 'uint256' },
        { name: 'nonce', type: 'uint256' }, { name: 'deadline', type: 'uint256' },
      ],
    },
    primaryType: 'Permit',
    domain: { name, version, chainId: Number(chainIdOnToken), verifyingContract },
    message: { owner, spender, value: String(value), nonce: nonce.toString(), deadline: String(deadline) },
  }
  const signature = await request('eth_signTypedData_v4', [owner, JSON.stringify(typed)])
  const { r, s, v, yParity } = parseSignature(signature)
  return { r, s, v: Number(v ?? BigInt(27 + yParity)) }
}
