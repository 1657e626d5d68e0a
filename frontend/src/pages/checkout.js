// Buyer checkout: product -> game account (checked live) -> token -> wallet (EIP-1193) -> approve +
// pay -> live status. A wallet error (declined, wrong network, too little balance) says so and keeps
// the order: the quote and every confirmed step stay, "Try again" resumes where it stopped.
import { useEffect, useRef, useState } from 'preact/hooks'
import { encodeFunctionData, getAddress, parseAbi } from 'viem'
import { html } from '../html.js'
import { lang, t } from '../i18n.js'
import { Notice } from '../layout.js'
import { useSignal } from '../signal.js'
import { ApiError, NetworkError, api, formatUnits, short } from '../api.js'
import * as siwe from '../siwe.js'
import * as wallet from '../wallet.js'
import { OrderStatus, OrderTable } from '../orders.js'

const ESCROW_ABI = parseAbi([
  'struct Order { bytes32 orderId; address buyer; address merchant; address token; uint256 amount; uint16 feeBps; uint48 quoteExpiry; uint48 fulfilmentDeadline; bytes32 skuHash; bytes32 accountCommitment; }',
  'function payWithPermit(Order order, address quoteSigner, bytes quoteSignature, uint256 permitDeadline, uint8 v, bytes32 r, bytes32 s)',
])

// payWithPermit calldata from the quote (docs/protocol.md): the order as the quote signer signed it.
function permitPayStep(q, permit) {
  const o = q.order
  const order = {
    orderId: o.orderId, buyer: o.buyer, merchant: o.merchant, token: o.token, amount: BigInt(o.amount),
    feeBps: o.feeBps, quoteExpiry: o.quoteExpiry, fulfilmentDeadline: o.fulfilmentDeadline,
    skuHash: o.skuHash, accountCommitment: o.accountCommitment,
  }
  const data = encodeFunctionData({
    abi: ESCROW_ABI, functionName: 'payWithPermit',
    args: [order, q.quote_signer, q.quote_signature, BigInt(o.quoteExpiry), permit.v, permit.r, permit.s],
  })
  return { step: 'pay', to: q.permit.spender, value: '0', data }
}

const RECENT = 'cardless_recent_orders'
const recent = () => { try { return JSON.parse(localStorage.getItem(RECENT) ?? '[]') } catch { return [] } }
function remember(entry) {
  const list = recent().filter((o) => o.order_id !== entry.order_id)
  localStorage.setItem(RECENT, JSON.stringify([entry, ...list].slice(0, 20)))
}

function problemText(error) {
  if (error instanceof NetworkError) return t('err.network')
  if (error instanceof ApiError && error.status === 503) return t('co.unavailable')
  if (error instanceof ApiError) return t('err.generic', { detail: error.fieldMessage || error.message })
  return t('err.generic', { detail: error.message ?? String(error) })
}

function walletText(error, symbol, afterApprove) {
  switch (error.kind) {
    case 'rejected': return t(afterApprove ? 'co.rejected.afterApprove' : 'co.rejected')
    case 'funds': return t('co.gas.low')
    case 'missing': return t('co.nowallet')
    default: return t('co.walleterror', { message: error.message })
  }
}

function useAccountCheck(sku, account) {
  const [check, setCheck] = useState({ status: 'idle' })
  const seq = useRef(0)
  useEffect(() => {
    const typed = account.trim()
    if (!sku || !typed) { setCheck({ status: 'idle' }); return undefined }
    const mine = ++seq.current
    setCheck({ status: 'checking' })
    const timer = setTimeout(async () => {
      try {
        const result = await api('/v1/accounts/check', { method: 'POST', body: { sku, account: typed } })
        if (mine === seq.current) setCheck({ status: 'ok', data: result })
      } catch (error) {
        if (mine !== seq.current) return
        if (error instanceof ApiError && error.status === 422 && error.field === 'account') {
          const unknown = /does not accept/.test(error.fieldMessage)
          setCheck({ status: 'error', message: unknown ? t('co.account.unknown', { account: typed }) : t('co.account.bad', { detail: error.fieldMessage }) })
        } else setCheck({ status: 'error', message: problemText(error) })
      }
    }, 350)
    return () => clearTimeout(timer)
  }, [sku, account])
  return check
}

export function Checkout() {
  useSignal(lang)
  const [catalogue, setCatalogue] = useState(null)
  const [health, setHealth] = useState(null)
  const [loadError, setLoadError] = useState(null)
  const [skuId, setSkuId] = useState(null)
  const [account, setAccount] = useState('')
  const [token, setToken] = useState(null)
  const [method, setMethod] = useState('approve')
  const [address, setAddress] = useState(null)
  const [walletIssue, setWalletIssue] = useState(null)
  const [phase, setPhase] = useState('idle')
  const [error, setError] = useState(null)
  const [quote, setQuote] = useState(null)
  const [sent, setSent] = useState({})
  const [watching, setWatching] = useState(null)
  const check = useAccountCheck(skuId, account)

  useEffect(() => {
    api('/v1/catalogue').then((c) => {
      setCatalogue(c)
      const wanted = new URLSearchParams(location.search).get('sku')
      const first = c.skus.find((s) => s.id === wanted) ?? c.skus[0]
      if (first) { setSkuId(first.id); setToken(first.prices[0]?.token ?? null) }
    }).catch((e) => setLoadError(problemText(e)))
    api('/v1/health').then(setHealth).catch(() => {})
  }, [])

  const sku = catalogue?.skus.find((s) => s.id === skuId)
  const price = sku?.prices.find((p) => p.token === token)
  const busy = !['idle', 'error'].includes(phase) && phase !== 'done'
  // A new choice makes a new order: the kept quote is for the old one.
  useEffect(() => { if (phase !== 'done') { setQuote(null); setSent({}) } }, [skuId, account, token, address, method])
  const native = price ? /^0x0{40}$/i.test(price.address) : false

  function pickSku(id) {
    const next = catalogue.skus.find((s) => s.id === id)
    setSkuId(id)
    if (!next.prices.some((p) => p.token === token)) setToken(next.prices[0]?.token ?? null)
  }

  async function ensureChain() {
    const have = await wallet.chainId()
    if (have !== catalogue.chain_id) {
      setWalletIssue({ kind: 'chain', have })
      return false
    }
    setWalletIssue(null)
    return true
  }

  async function onConnect() {
    setError(null)
    try {
      const a = getAddress(await wallet.connect())
      setAddress(a)
      await ensureChain()
    } catch (e) {
      setError(walletText(e))
    }
  }

  async function onSwitch() {
    setError(null)
    try {
      await wallet.switchChain(catalogue.chain_id, health?.deployment?.rpc_url)
      await ensureChain()
    } catch (e) {
      setError(walletText(e))
    }
  }

  async function onPay() {
    setError(null)
    let afterApprove = false
    try {
      if (!(await ensureChain())) return
      // Balance first: too little means no quote, no transaction, nothing to clean up.
      const have = await wallet.tokenBalance(price.address, address)
      if (have < BigInt(price.amount)) {
        setPhase('error')
        setError(t('co.balance.low', { have: formatUnits(have, price.decimals), need: formatUnits(price.amount, price.decimals), symbol: price.token }))
        return
      }
      if ((await wallet.ethBalance(address)) === 0n) { setPhase('error'); setError(t('co.gas.low')); return }
      let q = quote
      // A kept quote that expired (the buyer came back late) is replaced before anything is sent: paying
      // it would revert and cost gas. A new quote is a new order; the old one expires unpaid.
      if (q && !sent.pay && (await wallet.chainTime()) >= Number(q.order.quoteExpiry) - 30) {
        q = null
        setSent({})
      }
      if (!q) {
        setPhase('quoting')
        q = await api('/v1/quotes', { method: 'POST', body: { sku: sku.id, account: account.trim(), token, buyer: address } })
        setQuote(q)
        remember({ order_id: q.order_id, sku: sku.id, token: q.token.address, amount: q.order.amount, state: 'quoted',
          created_at: new Date().toISOString(), salt: q.account_salt })
      }
      const done = q === quote ? { ...sent } : {}
      // One signature and one transaction (EIP-2612) instead of approve + pay, for a token.
      const steps = method === 'permit' && q.permit ? [null] : q.transactions
      for (let step of steps) {
        if (step === null) {
          setPhase('permit')
          const permit = await wallet.signPermit({ owner: address, token: q.token.address, spender: q.permit.spender,
            value: q.permit.value, deadline: q.order.quoteExpiry })
          step = permitPayStep(q, permit)
        }
        if (done[step.step]) { afterApprove = afterApprove || step.step === 'approve'; continue }
        // An allowance already in place (an earlier attempt, another tab) is not asked for again.
        if (step.step === 'approve' && (await wallet.allowance(q.token.address, address, q.permit.spender)) >= BigInt(q.order.amount)) {
          done.approve = 'kept'
          afterApprove = true
          continue
        }
        setPhase(step.step)
        const hash = await wallet.sendTransaction(address, step)
        setPhase('mining')
        const receipt = await wallet.waitForReceipt(hash)
        if (receipt.status !== '0x1' && receipt.status !== 1) {
          setPhase('error')
          setError(t('co.reverted', { hash: short(hash) }))
          return
        }
        done[step.step] = hash
        setSent({ ...done })
        if (step.step === 'approve') afterApprove = true
      }
      setPhase('done')
      setWatching({ orderId: q.order_id, payTx: done.pay, salt: q.account_salt })
    } catch (e) {
      setPhase('error')
      if (e instanceof wallet.WalletError) setError(walletText(e, price?.token, afterApprove))
      else if (e instanceof ApiError && e.field === 'account') setError(t('co.account.bad', { detail: e.fieldMessage }))
      else setError(problemText(e))
    }
  }

  if (loadError) return html`<h1>${t('co.title')}</h1><${Notice} kind="error">${loadError}<//>`
  if (!catalogue) return html`<h1>${t('co.title')}</h1><p>${t('loading')}</p>`
  const tokens = health?.deployment?.tokens ?? catalogue.skus.flatMap((s) => s.prices.map((p) => ({ symbol: p.token, address: p.address, decimals: p.decimals })))
  const canPay = sku && price && check.status === 'ok' && address && !walletIssue && !busy

  return html`
    <h1>${t('co.title')}</h1>
    ${watching ? html`<${OrderStatus} ...${watching} />` : html`
    <form class="checkout" onSubmit=${(e) => { e.preventDefault(); onPay() }} novalidate>
      <fieldset class="panel">
        <legend>${t('co.product')}</legend>
        <div class="choices">
          ${catalogue.skus.map((s) => html`
            <label class="choice">
              <input type="radio" name="sku" value=${s.id} checked=${s.id === skuId} disabled=${busy}
                onChange=${() => pickSku(s.id)} />
              <span>${s.title}</span>
              <small>${s.prices.map((p) => `${formatUnits(p.amount, p.decimals)} ${p.token}`).join(' · ')}</small>
            </label>`)}
        </div>
      </fieldset>

      <fieldset class="panel">
        <legend>${t('co.account')}</legend>
        <label for="account">${t('co.account.label')}</label>
        <input id="account" name="account" autocomplete="off" inputmode="numeric" value=${account} disabled=${busy}
          aria-describedby="account-hint account-check" aria-invalid=${check.status === 'error' ? 'true' : 'false'}
          onInput=${(e) => setAccount(e.currentTarget.value)} />
        <p id="account-hint" class="hint">${t('co.account.hint')}</p>
        <div id="account-check" aria-live="polite" data-testid="account-check" data-status=${check.status}>
          ${check.status === 'checking' && html`<p class="hint">${t('co.account.checking')}</p>`}
          ${check.status === 'ok' && html`<p class="notice ok">${t('co.account.ok', { nickname: check.data.nickname ?? check.data.account, provider: check.data.provider })}</p>`}
          ${check.status === 'error' && html`<p class="notice error">${check.message}</p>`}
        </div>
      </fieldset>

      <fieldset class="panel">
        <legend>${t('co.token')}</legend>
        <div class="choices row">
          ${sku?.prices.map((p) => html`
            <label class="choice">
              <input type="radio" name="token" value=${p.token} checked=${p.token === token} disabled=${busy}
                onChange=${() => setToken(p.token)} />
              <span>${t('co.price', { amount: formatUnits(p.amount, p.decimals), symbol: p.token })}</span>
            </label>`)}
        </div>
        ${price && !native && html`
          <fieldset class="method">
            <legend>${t('co.method')}</legend>
            <label class="inline"><input type="radio" name="method" value="approve" checked=${method === 'approve'} disabled=${busy}
              onChange=${() => setMethod('approve')} /> ${t('co.method.approve')}</label>
            <label class="inline"><input type="radio" name="method" value="permit" checked=${method === 'permit'} disabled=${busy}
              onChange=${() => setMethod('permit')} /> ${t('co.method.permit')}</label>
          </fieldset>`}
      </fieldset>

      <fieldset class="panel">
        <legend>${t('co.wallet')}</legend>
        ${address
          ? html`<p data-testid="wallet-address">${t('co.connected', { address: short(address) })}</p>`
          : html`<button type="button" class="secondary" onClick=${onConnect} disabled=${!wallet.provider()}>${t('co.connect')}</button>
                 ${!wallet.provider() && html`<${Notice} kind="warn">${t('co.nowallet')} <a href="/wallet-setup">${t('nav.wallet')}</a><//>`}`}
        ${walletIssue?.kind === 'chain' && html`
          <${Notice} kind="error" testid="wallet-issue">${t('co.wrongnet', { have: walletIssue.have, want: catalogue.chain_id })}<//>
          <button type="button" class="secondary" onClick=${onSwitch}>${t('co.switch')}</button>`}
      </fieldset>

      <fieldset class="panel">
        <legend>${t('co.pay')}</legend>
        <button type="submit" class="primary" disabled=${!canPay} data-testid="pay">
          ${error && quote ? t('co.retry') : t('co.paybtn', { amount: price ? formatUnits(price.amount, price.decimals) : '', symbol: token ?? '' })}
        </button>
        <div aria-live="polite" data-testid="pay-phase" data-phase=${phase}>
          ${phase === 'quoting' && html`<p class="hint">${t('co.quoting')}</p>`}
          ${phase === 'permit' && html`<p class="hint">${t('co.step.permit', { symbol: token })}</p>`}
          ${phase === 'approve' && html`<p class="hint">${t('co.step.approve', { symbol: token })}</p>`}
          ${phase === 'pay' && html`<p class="hint">${t('co.step.pay')}</p>`}
          ${phase === 'mining' && html`<p class="hint">${t('co.step.mining')}</p>`}
        </div>
        <${Notice} kind="error" testid="pay-error">${error}<//>
      </fieldset>
    </form>`}
    <${MyOrders} address=${address} catalogue=${catalogue} tokens=${tokens} onOpen=${(id) => setWatching({ orderId: id })} />`
}

function MyOrders({ address, tokens, onOpen }) {
  const [session, setSession] = useState(() => { try { return JSON.parse(sessionStorage.getItem('cardless_siwe')) } catch { return null } })
  const [orders, setOrders] = useState(null)
  const [error, setError] = useState(null)
  const local = recent()

  useEffect(() => {
    if (!session) return
    api('/v1/orders?limit=20', { token: session.token })
      .then((page) => setOrders(page.data))
      .catch((e) => { if (e.status === 401) { sessionStorage.removeItem('cardless_siwe'); setSession(null) } else setError(problemText(e)) })
  }, [session])

  async function signIn() {
    setError(null)
    try {
      const who = address ?? getAddress(await wallet.connect())
      const created = await siwe.signIn({ path: '/v1/auth/siwe', statement: 'Sign in to Cardless to see your orders.', address: who })
      sessionStorage.setItem('cardless_siwe', JSON.stringify(created))
      setSession(created)
    } catch (e) {
      setError(e instanceof wallet.WalletError ? walletText(e) : problemText(e))
    }
  }

  return html`
    <section class="panel" aria-labelledby="mine-h">
      <h2 id="mine-h">${t('mine.title')}</h2>
      ${session
        ? orders && (orders.length
          ? html`<${OrderTable} orders=${orders} tokens=${tokens} onOpen=${onOpen} caption=${t('mine.title')} />`
          : html`<p>${t('mine.none')}</p>`)
        : html`<p class="hint">${t('mine.hint')}</p>
               <button type="button" class="secondary" onClick=${signIn} disabled=${!wallet.provider()} data-testid="siwe">${t('mine.signin')}</button>`}
      <${Notice} kind="error">${error}<//>
      ${!session && local.length > 0 && html`
        <h3>${t('mine.recent')}</h3>
        <ul class="plain">${local.map((o) => html`<li><button type="button" class="link mono" onClick=${() => onOpen(o.order_id)}>${short(o.order_id)}</button> · ${o.sku}</li>`)}</ul>`}
    </section>`
}
