// Auditor view: load the JSON of `cardless audit --json` (nothing is uploaded: the file is read in the
// browser), see the summary and any violation, and verify one order step by step in this browser
// against a JSON-RPC node with the verifier's own code (verifier/verify-order.mjs, bundled).
import { useEffect, useState } from 'preact/hooks'
import { createPublicClient, http } from 'viem'
import { verifyOrder } from '../../../verifier/verify-order.mjs'
import { html } from '../html.js'
import { lang, t } from '../i18n.js'
import { Hash, Notice } from '../layout.js'
import { useSignal } from '../signal.js'
import { api, formatUnits, short } from '../api.js'

function checkAudit(data) {
  for (const key of ['orders', 'settled', 'refunded', 'violations', 'tokens']) {
    if (!(key in data)) throw new Error(`missing "${key}"`)
  }
  if (!Array.isArray(data.violations)) throw new Error('"violations" is not a list')
  return data
}

export function Audit() {
  useSignal(lang)
  const [audit, setAudit] = useState(null)
  const [fileError, setFileError] = useState(null)
  const [health, setHealth] = useState(null)
  const [target, setTarget] = useState({ rpc: '', escrow: '', order: '' })

  useEffect(() => {
    api('/v1/health').then((h) => {
      setHealth(h)
      setTarget((x) => ({ ...x, rpc: x.rpc || h.deployment.rpc_url || '', escrow: x.escrow || h.deployment.escrow }))
    }).catch(() => {})
  }, [])

  async function onFile(e) {
    setFileError(null)
    const file = e.currentTarget.files?.[0]
    if (!file) return
    try {
      setAudit(checkAudit(JSON.parse(await file.text())))
    } catch (error) {
      setAudit(null)
      setFileError(t('a.badfile', { error: error.message }))
    }
  }

  const tokens = health?.deployment?.tokens ?? []
  const decimalsOf = (address) => tokens.find((tk) => tk.address.toLowerCase() === String(address).toLowerCase())
  return html`
    <h1>${t('a.title')}</h1>
    <section class="panel">
      <label for="audit-file">${t('a.file')}</label>
      <input id="audit-file" type="file" accept="application/json,.json" onChange=${onFile} data-testid="audit-file" />
      <${Notice} kind="error">${fileError}<//>
    </section>
    ${audit && html`<${Summary} audit=${audit} tokenOf=${decimalsOf} onPick=${(order) => setTarget((x) => ({ ...x, order }))} />`}
    <${Verify} target=${target} setTarget=${setTarget} />`
}

function Summary({ audit, tokenOf, onPick }) {
  const n = audit.violations.length
  return html`
    <section class="panel" aria-labelledby="sum-h" data-testid="audit-summary">
      <h2 id="sum-h">${t('a.summary')}</h2>
      <dl class="facts counts">
        ${['orders', 'settled', 'refunded', 'reclaimed', 'open', 'reclaimable'].filter((k) => k in audit).map((k) => html`<dt>${k}</dt><dd>${audit[k]}</dd>`)}
      </dl>
      ${n === 0
        ? html`<p class="notice ok" data-testid="audit-verdict">${t('a.noviolations')}</p>`
        : html`<p class="notice error" role="alert" data-testid="audit-verdict">${t('a.violations', { n })}</p>
          <div class="table-wrap" tabindex="0" role="region" aria-label=${t('a.violations', { n })}>
          <table><thead><tr><th scope="col">${t('col.order')}</th><th scope="col">${t('a.rule')}</th><th scope="col">${t('a.evidence')}</th><th scope="col">${t('a.block')}</th></tr></thead>
          <tbody>${audit.violations.map((v) => html`<tr data-testid="violation">
            <td>${v.order_id ? html`<button type="button" class="link mono" onClick=${() => onPick(v.order_id)}>${short(v.order_id)}</button>` : '—'}</td>
            <td><code>${v.rule}</code></td><td>${typeof v.evidence === 'string' ? v.evidence : JSON.stringify(v.evidence)}</td><td>${v.block ?? ''}</td></tr>`)}
          </tbody></table></div>`}
      <h3>${t('a.tokens')}</h3>
      <div class="table-wrap" tabindex="0" role="region" aria-label=${t('a.tokens')}>
        <table><thead><tr><th scope="col">${t('col.token')}</th>${['paid', 'settled', 'fees_earned', 'refunded', 'open'].map((k) => html`<th scope="col">${k}</th>`)}</tr></thead>
        <tbody>${Object.entries(audit.tokens).map(([address, books]) => {
          const tk = tokenOf(address)
          const show = (v) => (v === undefined ? '' : tk ? formatUnits(v, tk.decimals) : v)
          return html`<tr><td>${tk?.symbol ?? short(address)}</td>${['paid', 'settled', 'fees_earned', 'refunded', 'open'].map((k) => html`<td>${show(books[k])}</td>`)}</tr>`
        })}</tbody></table>
      </div>
    </section>`
}

function Verify({ target, setTarget }) {
  const [result, setResult] = useState(null)
  const [running, setRunning] = useState(false)
  async function run(e) {
    e.preventDefault()
    setRunning(true)
    setResult(null)
    try {
      const client = createPublicClient({ transport: http(target.rpc, { retryCount: 0 }) })
      setResult(await verifyOrder(client, target.escrow, target.order.trim().toLowerCase(), 0n))
    } catch (error) {
      setResult({ verified: false, error: error.shortMessage ?? error.message ?? String(error) })
    } finally {
      setRunning(false)
    }
  }
  const field = (name, label, extra = {}) => html`
    <label for=${`v-${name}`}>${label}</label>
    <input id=${`v-${name}`} value=${target[name]} spellcheck="false" ...${extra}
      onInput=${(e) => setTarget((x) => ({ ...x, [name]: e.currentTarget.value }))} />`
  return html`
    <section class="panel" aria-labelledby="ver-h">
      <h2 id="ver-h">${t('a.verify')}</h2>
      <form class="stack" onSubmit=${run}>
        ${field('rpc', t('a.rpc'), { type: 'url' })}
        ${field('escrow', t('a.escrow'))}
        ${field('order', t('a.orderid'), { 'data-testid': 'verify-order-id' })}
        <button type="submit" class="primary" disabled=${running || !target.order}>${t('a.run')}</button>
      </form>
      <div aria-live="polite" data-testid="verify-result" data-verified=${result ? String(result.verified) : ''}>
        ${running && html`<p class="hint">${t('a.running')}</p>`}
        ${result?.verified && html`
          <p class="notice ok">${t('a.ok', { status: result.status })}</p>
          <ol class="steps done-all">${result.steps.map((s) => html`<li data-testid="verify-step">
            <strong>${s.step}</strong> · ${s.kind ?? ''} ${s.signer ? html`signer <${Hash} value=${s.signer} />` : ''} · block ${s.block}
            ${s.digest ? html`<br />digest <${Hash} value=${s.digest} />` : ''}
            ${s.reasonCode !== undefined ? html` · reason ${s.reasonCode}` : ''}</li>`)}</ol>
          <p class="small">amount ${result.amount} · fee ${result.fee} · merchant ${result.merchantAmount}</p>`}
        ${result && !result.verified && html`<p class="notice error" role="alert">${t('a.fail', { error: result.error })}</p>`}
      </div>
    </section>`
}
