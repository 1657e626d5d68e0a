// Sign-In with Ethereum (EIP-4361) from a page: a nonce from the gateway (POST /v1/auth/siwe/nonce,
// which also names the domain and chain id the message must carry), the message in the exact form the
// gateway parses (gateway/services/siwe.py), the wallet's personal_sign, then the sign-in route: the
// buyers' /v1/auth/siwe or the merchants' /v1/auth/siwe/merchant. Wallet errors stay WalletError.
import { api } from './api.js'
import * as wallet from './wallet.js'

export function siweMessage({ domain, address, chainId, nonce, statement }) {
  return `${domain} wants you to sign in with your Ethereum account:\n${address}\n\n${statement}\n\n` +
    `URI: ${location.origin}\nVersion: 1\nChain ID: ${chainId}\nNonce: ${nonce}\nIssued At: ${new Date().toISOString()}`
}

// `address` must be EIP-55 checksummed (the gateway refuses any other spelling).
export async function signIn({ path, statement, address }) {
  const nonce = await api('/v1/auth/siwe/nonce', { method: 'POST' })
  const message = siweMessage({ domain: nonce.domain, address, chainId: nonce.chain_id, nonce: nonce.nonce, statement })
  const signature = await wallet.personalSign(address, message)
  return api(path, { method: 'POST', body: { message, signature } })
}
