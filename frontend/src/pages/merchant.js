// Merchant dashboard: signed in with the merchant's API key (ck_live_...) or, through "Sign in with
// wallet", a wallet session (cm_sess_...) that the merchant's settlement address opens with Sign-In with
// Ethereum (POST /v1/auth/siwe/merchant). Either is kept in this tab only (sessionStorage); signing out
// of a wallet session ends it on the gateway too. Everything is the merchant API: /v1/merchant,
// /v1/orders, balances, the settlement report, webhooks and their delivery log, the catalogue.
import { useEffect, useState } from 'preact/hooks'
import { getAddress } from 'viem'
import { html } from '../html.js'
import { formatTime, lang, t } from '../i18n.js'
import { Hash, Notice } from '../layout.js'
import { useSignal } from '../signal.js'
import { ApiError, NetworkError, api, formatUnits, short } from '../api.js'
import * as siwe from '../siwe.js'
import * as wallet from '../wallet.js'
import { OrderTable, stateLabel } from '../orders.js'

const KEY = 'cardless_merchant_key'
// The gateway requires exactly this statement for a merchant session (gateway/services/merchant_sessions.py).
const STATEMENT = 'Sign in to the Cardless merchant dashboard.'
const STATES = ['quoted', 'paid', 'submitting', 'unknown', 'proof_pending', 'settled', 'refund_pending', 'refunded', 'reclaimed', 'expired']
const detail = (e) => (e instanceof ApiError ? e.fieldMessage || e.message : String(e.message ?? e))
const isSession = (token) => token?.startsWith('cm_sess_')

function walletSignInText(error, address) {
  if (error instanceof wallet.WalletError) {
    if (error.kind === 'missing') return t('m.wallet.none')
    if (error.kind === 'rejected') return t('m.wallet.rejected')
    return t('m.wallet.refused', { detail: error.message })
  }
  if (error instanceof NetworkError) return t('err.network')
  if (error instanceof ApiError && error.status === 403 && /not a merchant's settlement address/.test(error.message)) {
    return t('m.wallet.notmerchant', { address })
  }
  return t('m.wallet.refused', { detail: detail(error) })
}

export function Merchant() {
  useSignal(lang)
  const [key, setKey] = useState(() => sessionStorage.getItem(KEY))
  const [me, setMe] = useState(null)
  const [error, setError] = useState(null)
  const [draft, setDraft] = useState('')
  const [waiting, setWaiting] = useState(false)

  useEffect(() => {
    if (!key) { setMe(null); return }
    api('/v1/merchant', { token: key }).then(setMe).catch((e) => {
      sessionStorage.removeItem(KEY); setKey(null)
      setError(t(isSession(key) ? 'm.session.ended' : 'm.nokey', { detail: detail(e) }))
    })
  }, [key])

  function use(token) {
    sessionStorage.setItem(KEY, token)
    setKey(token)
  }

  function signIn(e) {
    e.preventDefault()
    setError(null)
    use(draft.trim())
    setDraft('')
  }

  async function signInWithWallet() {
    setError(null)
    let address = null
    setWaiting(true)
    try {
      address = getAddress(await wallet.connect())
      const created = await siwe.signIn({ path: '/v1/auth/siwe/merchant', statement: STATEMENT, address })
      use(created.token)
    } catch (e) {
      setError(walletSignInText(e, address))
    } finally {
      setWaiting(false)
    }
  }

  // A wallet session ends on the gateway first (whatever it answers, this tab forgets it after).
  async function signOut() {
    if (isSession(key)) await api('/v1/auth/siwe/merchant', { method: 'DELETE', token: key }).catch(() => {})
    sessionStorage.removeItem(KEY)
    setKey(null)
  }

  if (!key || !me) return html`
    <h1>${t('m.title')}</h1>
    <div class="panel narrow signin">
      <form onSubmit=${signIn}>
        <label for="api-key">${t('m.key')}</label>
        <input id="api-key" type="password" autocomplete="off" spellcheck="false" value=${draft}
          aria-describedby="api-key-hint" onInput=${(e) => setDraft(e.currentTarget.value)} />
        <p id="api-key-hint" class="hint">${t('m.key.hint')}</p>
        <button type="submit" class="primary" disabled=${!draft.trim()}>${t('m.signin')}</button>
      </form>
      <p class="or"><span>${t('m.or')}</span></p>
      <button type="button" class="secondary" onClick=${signInWithWallet} aria-describedby="wallet-hint"
        aria-busy=${waiting ? 'true' : 'false'} disabled=${waiting} data-testid="merchant-siwe">${t('m.wallet')}</button>
      <p id="wallet-hint" class="hint">${t('m.wallet.hint')}</p>
      ${waiting && html`<${Notice}>${t('m.wallet.wait')}<//>`}
      <${Notice} kind="error">${error}<//>
    </div>`

  return html`
    <div class="title-row">
      <h1>${t('m.title')}: ${me.name}</h1>
      <button type="button" class="secondary" onClick=${signOut}>${t('m.signout')}</button>
    </div>
    ${isSession(key) && html`<p class="hint" data-testid="signed-in-as">${t('m.signedin.wallet', { address: me.address })}</p>`}
    <div class="grid">
      <${Balances} token=${key} />
      <${Charts} token=${key} />
    </div>
    <${Orders} token=${key} />
    <${Catalogue} token=${key} />
    <${Webhooks} token=${key} />`
}

function Orders({ token }) {
  const [filters, setFilters] = useState({ state: '', sku: '' })
  const [page, setPage] = useState(null)
  const [open, setOpen] = useState(null)
  const [error, setError] = useState(null)
  const [tokens, setTokens] = useState([])

  async function load(after) {
    const query = new URLSearchParams({ limit: '20' })
    if (filters.state) query.set('state', filters.state)
    if (filters.sku) query.set('sku', filters.sku)
    if (after) query.set('starting_after', after)
    try {
      const next = await api(`/v1/orders?${query}`, { token })
      setPage((old) => (after && old ? { ...next, data: [...old.data, ...next.data] } : next))
    } catch (e) { setError(detail(e)) }
  }
  useEffect(() => { load(); api('/v1/health').then((h) => setTokens(h.deployment.tokens)).catch(() => {}) }, [])

  return html`
    <section class="panel" aria-labelledby="orders-h">
      <h2 id="orders-h">${t('m.orders')}</h2>
      <form class="filters" onSubmit=${(e) => { e.preventDefault(); load() }}>
        <label>${t('m.filter.state')}
          <select value=${filters.state} onChange=${(e) => setFilters({ ...filters, state: e.currentTarget.value })} data-testid="filter-state">
            <option value="">${t('m.filter.any')}</option>
            ${STATES.map((s) => html`<option value=${s}>${s} · ${stateLabel(s)}</option>`)}
          </select></label>
        <label>${t('m.filter.sku')}
          <input value=${filters.sku} onInput=${(e) => setFilters({ ...filters, sku: e.currentTarget.value })} /></label>
        <button type="submit" class="secondary">${t('m.filter.apply')}</button>
      </form>
      <${Notice} kind="error">${error}<//>
      ${page && html`<${OrderTable} orders=${page.data} tokens=${tokens} onOpen=${setOpen} caption=${t('m.orders')} />`}
      ${page?.has_more && html`<button type="button" class="secondary" onClick=${() => load(page.data.at(-1).order_id)}>${t('m.more')}</button>`}
      ${open && html`<${Timeline} token=${token} orderId=${open} />`}
    </section>`
}

function Timeline({ token, orderId }) {
  const [order, setOrder] = useState(null)
  useEffect(() => { api(`/v1/orders/${orderId}`, { token }).then(setOrder).catch(() => setOrder(null)) }, [orderId])
  if (!order) return null
  return html`
    <section class="timeline" aria-labelledby="tl-h" data-testid="timeline">
      <h3 id="tl-h">${t('m.timeline', { id: short(orderId) })}</h3>
      <ol>${order.timeline.map((e) => html`<li><time datetime=${e.at}>${formatTime(e.at)}</time> <strong>${e.to}</strong> — ${e.reason}</li>`)}</ol>
      <dl class="facts">
        ${order.chain.paid_tx && html`<dt>${t('co.paid_tx')}</dt><dd><${Hash} value=${order.chain.paid_tx} /></dd>`}
        ${order.chain.settle_tx && html`<dt>${t('co.settle_tx')}</dt><dd><${Hash} value=${order.chain.settle_tx} /></dd>`}
        ${order.chain.refund_tx && html`<dt>${t('co.refund_tx')}</dt><dd><${Hash} value=${order.chain.refund_tx} /></dd>`}
      </dl>
    </section>`
}

function Balances({ token }) {
  const [balances, setBalances] = useState(null)
  const [report, setReport] = useState(null)
  const [error, setError] = useState(null)
  useEffect(() => {
    api('/v1/merchant/balances', { token }).then(setBalances).catch((e) => setError(detail(e)))
    const start = new Date(Date.now() - 30 * 86400_000).toISOString()
    api(`/v1/merchant/settlement-report?start=${encodeURIComponent(start)}`, { token }).then(setReport).catch(() => {})
  }, [])
  const decimals = (symbol) => (symbol === 'ETH' ? 18 : 6)
  const payouts = report?.tokens.flatMap((tk) => tk.payouts.map((p) => ({ ...p, symbol: tk.symbol }))) ?? []
  return html`
    <section class="panel" aria-labelledby="bal-h" data-testid="balances">
      <h2 id="bal-h">${t('m.balances')}</h2>
      <${Notice} kind="error">${error}<//>
      ${balances?.balances.map((b) => html`
        <dl class="facts money">
          <dt>${b.symbol} · ${t('m.onchain')}</dt><dd>${formatUnits(b.balance_on_chain, decimals(b.symbol))}</dd>
          <dt>${t('m.inescrow')}</dt><dd>${formatUnits(b.in_escrow, decimals(b.symbol))}</dd>
          <dt>${t('m.settled')}</dt><dd>${formatUnits(b.settled_net, decimals(b.symbol))}</dd>
          <dt>${t('m.withdrawn')}</dt><dd>${formatUnits(b.withdrawn, decimals(b.symbol))}</dd>
          <dt class="sr-only">${t('m.reconciled')}</dt><dd class=${b.reconciled ? 'ok-text' : 'error-text'}>${b.reconciled ? t('m.reconciled') : t('m.notreconciled')}</dd>
        </dl>`)}
      <h3>${t('m.payouts')}</h3>
      ${payouts.length ? html`<ul class="plain">${payouts.map((p) => html`<li>${formatUnits(p.amount, decimals(p.symbol))} ${p.symbol} → <${Hash} value=${p.tx_hash} /></li>`)}</ul>`
        : html`<p class="hint">${t('m.nopayouts')}</p>`}
    </section>`
}

// Charts where analytics exist (issue 14's /v1/analytics: heatmap, sku-daily, providers, read with
// this key's orders:read). Drawn as tables with shaded cells and bars: readable by screen readers and
// at phone width, no chart library. Until the gateway serves them (404), the slot says so.
const WEEKDAYS = { en: ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'], 'zh-CN': ['周日', '周一', '周二', '周三', '周四', '周五', '周六'] }

function Charts({ token }) {
  const [data, setData] = useState(undefined)
  useEffect(() => {
    const query = `days=30&tz_offset_minutes=${-new Date().getTimezoneOffset()}`
    Promise.all(['heatmap', 'sku-daily', 'providers'].map((name) => api(`/v1/analytics/${name}?${query}`, { token })))
      .then(([heatmap, daily, providers]) => setData({ heatmap, daily, providers }))
      .catch(() => setData(null))
  }, [])
  return html`
    <section class="panel" aria-labelledby="charts-h" data-testid="charts">
      <h2 id="charts-h">${t('m.charts')}</h2>
      ${data === null && html`<p class="hint">${t('m.noanalytics')}</p>`}
      ${data && html`<${Heatmap} figure=${data.heatmap} /><${SkuDaily} figure=${data.daily} /><${Providers} figure=${data.providers} />`}
    </section>`
}

function Heatmap({ figure }) {
  const count = (d, h) => figure.cells.find((c) => c.weekday === d && c.hour === h)?.orders ?? 0
  const peak = Math.max(1, ...figure.cells.map((c) => c.orders))
  const hours = Array.from({ length: 24 }, (_, h) => h)
  return html`
    <h3 id="heat-h">${t('m.heatmap')}</h3>
    <div class="table-wrap" tabindex="0" role="region" aria-labelledby="heat-h">
      <table class="heatmap" data-testid="heatmap"><thead><tr><th scope="col"><span class="sr-only">${t('m.weekday')}</span></th>
        ${hours.map((h) => html`<th scope="col">${h}</th>`)}</tr></thead>
      <tbody>${WEEKDAYS[lang.value].map((name, d) => html`<tr><th scope="row">${name}</th>${hours.map((h) => {
        const n = count(d, h)
        return html`<td style=${`--heat:${n / peak}`} class=${n ? 'hot' : ''}>${n || ''}</td>`
      })}</tr>`)}</tbody></table>
    </div>`
}

function SkuDaily({ figure }) {
  const bySku = {}
  for (const row of figure.rows) bySku[row.sku] = (bySku[row.sku] ?? 0) + row.orders
  const top = Math.max(1, ...Object.values(bySku))
  return html`
    <h3>${t('m.skudaily')}</h3>
    ${!figure.rows.length && html`<p class="hint">${t('m.noorders')}</p>`}
    <ul class="plain bars">${Object.entries(bySku).map(([sku, n]) => html`
      <li><span class="bar-label">${sku}</span><span class="bar" style=${`--w:${(100 * n) / top}%`}></span><span>${n}</span></li>`)}</ul>`
}

function Providers({ figure }) {
  return html`
    <h3>${t('m.providers')}</h3>
    <table><thead><tr><th scope="col">${t('m.provider')}</th><th scope="col">${t('m.success')}</th><th scope="col">${t('m.latency')}</th></tr></thead>
    <tbody>${figure.providers.map((p) => html`<tr><td>${p.provider}</td>
      <td>${p.success_rate === null ? '—' : `${(100 * p.success_rate).toFixed(1)} %`} (${p.succeeded}/${p.attempts})</td>
      <td>${p.mean_seconds === null ? '—' : `${p.mean_seconds.toFixed(2)} s`}</td></tr>`)}</tbody></table>`
}

function Catalogue({ token }) {
  const [skus, setSkus] = useState(null)
  const [message, setMessage] = useState(null)
  const load = () => api('/v1/merchant/skus', { token }).then(setSkus).catch((e) => setMessage({ kind: 'error', text: detail(e) }))
  useEffect(() => { load() }, [])
  async function save(sku, patch) {
    setMessage(null)
    try {
      await api(`/v1/merchant/skus/${sku.id}`, { method: 'PATCH', body: patch, token })
      setMessage({ kind: 'ok', text: t('m.saved') })
      load()
    } catch (e) { setMessage({ kind: 'error', text: detail(e) }) }
  }
  return html`
    <section class="panel" aria-labelledby="cat-h" data-testid="catalogue">
      <h2 id="cat-h">${t('m.catalogue')}</h2>
      <${Notice} kind=${message?.kind ?? 'info'}>${message?.text}<//>
      <ul class="plain skus">
        ${skus?.map((s) => html`<li key=${s.id}><${SkuRow} sku=${s} onSave=${(patch) => save(s, patch)} /></li>`)}
      </ul>
    </section>`
}

function SkuRow({ sku, onSave }) {
  const [title, setTitle] = useState(sku.title)
  return html`
    <form class="sku-row" onSubmit=${(e) => { e.preventDefault(); onSave({ title }) }}>
      <code>${sku.id}</code>
      <label class="sr-only" for=${`title-${sku.id}`}>${t('m.title.label', { id: sku.id })}</label>
      <input id=${`title-${sku.id}`} value=${title} onInput=${(e) => setTitle(e.currentTarget.value)} />
      <label class="inline"><input type="checkbox" checked=${sku.enabled} onChange=${(e) => onSave({ enabled: e.currentTarget.checked })} /> ${t('m.enabled')}</label>
      <span class="small">${sku.prices.map((p) => `${p.amount} ${p.token}`).join(' · ')}</span>
      <button type="submit" class="secondary" disabled=${title === sku.title}>${t('m.save')}</button>
    </form>`
}

function Webhooks({ token }) {
  const [endpoints, setEndpoints] = useState(null)
  const [deliveries, setDeliveries] = useState({})
  const [url, setUrl] = useState('')
  const [message, setMessage] = useState(null)
  const load = () => api('/v1/merchant/webhook-endpoints', { token }).then((r) => setEndpoints(r.data ?? r)).catch((e) => setMessage({ kind: 'error', text: detail(e) }))
  useEffect(() => { load() }, [])
  useEffect(() => {
    for (const ep of endpoints ?? []) {
      api(`/v1/merchant/webhook-endpoints/${ep.id}/deliveries?limit=10`, { token })
        .then((r) => setDeliveries((d) => ({ ...d, [ep.id]: r.data ?? r }))).catch(() => {})
    }
  }, [endpoints])
  async function add(e) {
    e.preventDefault()
    setMessage(null)
    try {
      const created = await api('/v1/merchant/webhook-endpoints', { method: 'POST', token,
        body: { url, events: ['order.paid', 'order.settled', 'order.refunded'] } })
      setMessage({ kind: 'ok', text: created.secret ? t('m.secret', { secret: created.secret }) : t('m.saved') })
      setUrl('')
      load()
    } catch (err) { setMessage({ kind: 'error', text: detail(err) }) }
  }
  return html`
    <section class="panel" aria-labelledby="wh-h" data-testid="webhooks">
      <h2 id="wh-h">${t('m.webhooks')}</h2>
      <${Notice} kind=${message?.kind ?? 'info'}>${message?.text}<//>
      ${endpoints && !endpoints.length && html`<p class="hint">${t('m.nowebhooks')}</p>`}
      ${endpoints?.map((ep) => html`
        <article class="endpoint">
          <h3 class="mono small">${ep.url}</h3>
          <p class="small">${t('m.events')}: ${ep.events.join(', ')}</p>
          <h4>${t('m.deliveries')}</h4>
          <ul class="plain small">${(deliveries[ep.id] ?? []).map((d) => html`
            <li data-testid="delivery">${d.event_type} · ${d.status} · ×${d.attempts}${d.last_status_code ? ` · HTTP ${d.last_status_code}` : ''}</li>`)}</ul>
        </article>`)}
      <form class="inline-form" onSubmit=${add}>
        <label for="wh-url">${t('m.url')}</label>
        <input id="wh-url" type="url" value=${url} onInput=${(e) => setUrl(e.currentTarget.value)} />
        <button type="submit" class="secondary" disabled=${!url}>${t('m.add')}</button>
      </form>
    </section>`
}
