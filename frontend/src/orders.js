// Shared order views: the live status (server-sent events), state names, the buyer's order table.
import { useEffect, useState } from 'preact/hooks'
import { html } from './html.js'
import { formatTime, t } from './i18n.js'
import { Hash, Notice } from './layout.js'
import { formatUnits, short } from './api.js'

// The public states, grouped into what a buyer follows.
export function stage(state) {
  switch (state) {
    case 'quoted': return 'quoted'
    case 'paid': case 'risk_checked': return 'paid'
    case 'submitting': case 'unknown': case 'succeeded': return 'topping'
    case 'proof_pending': return 'proof'
    case 'settled': return 'settled'
    case 'failed_final': case 'refund_pending': return 'refunding'
    case 'refunded': return 'refunded'
    case 'reclaimed': return 'reclaimed'
    case 'expired': return 'expired'
    default: return state
  }
}

const HAPPY = ['paid', 'topping', 'proof', 'settled']
const REFUND = ['paid', 'topping', 'refunding', 'refunded']

export function stateLabel(state) {
  return t(`state.${stage(state)}`)
}

export function refundExplanation(code) {
  if (code === null || code === undefined) return null
  return code >= 1 && code <= 8 ? t(`refund.${code}`) : t('refund.other', { code })
}

// Follows one order over GET /v1/orders/{id}/events until a final state.
export function useOrderEvents(orderId) {
  const [order, setOrder] = useState(null)
  useEffect(() => {
    if (!orderId) return undefined
    const source = new EventSource(`/v1/orders/${orderId}/events`)
    source.addEventListener('order', (event) => {
      const next = JSON.parse(event.data)
      setOrder(next)
      if (['settled', 'refunded', 'reclaimed'].includes(next.state)) source.close()
    })
    return () => source.close()
  }, [orderId])
  return order
}

export function OrderStatus({ orderId, payTx, salt }) {
  const order = useOrderEvents(orderId)
  const current = order ? stage(order.state) : 'paid'
  const path = REFUND.includes(current) && current !== 'paid' && current !== 'topping' ? REFUND : HAPPY
  const index = Math.max(0, path.indexOf(current))
  return html`
    <section class="panel status" aria-labelledby="status-h" data-testid="order-status" data-order=${orderId}>
      <h2 id="status-h">${t('co.status')}</h2>
      <p class="mono">${t('co.order', { id: short(orderId) })}</p>
      <ol class="steps">
        ${path.map((s, i) => html`
          <li class=${i < index || (i === index && ['settled', 'refunded'].includes(s)) ? 'done' : i === index ? 'now' : ''}
              aria-current=${i === index ? 'step' : undefined}>${t(`state.${s}`)}</li>`)}
      </ol>
      <p class="state" role="status" aria-live="polite" data-testid="order-state" data-state=${order?.state ?? ''}>
        ${order ? stateLabel(order.state) : t('loading')}
      </p>
      ${order?.refund_reason != null && html`<${Notice} kind="warn">${refundExplanation(order.refund_reason)}<//>`}
      <dl class="facts">
        ${(order?.chain?.paid_tx || payTx) && html`<dt>${t('co.paid_tx')}</dt><dd><${Hash} value=${order?.chain?.paid_tx ?? payTx} /></dd>`}
        ${order?.chain?.settle_tx && html`<dt>${t('co.settle_tx')}</dt><dd><${Hash} value=${order.chain.settle_tx} /></dd>`}
        ${order?.chain?.refund_tx && html`<dt>${t('co.refund_tx')}</dt><dd><${Hash} value=${order.chain.refund_tx} /></dd>`}
        ${order?.proof && html`<dt>${t('co.proof')}</dt><dd><${Hash} value=${order.proof.signature} /></dd>`}
        ${order?.receipt_hash && html`<dt>${t('co.receipt_hash')}</dt><dd><${Hash} value=${order.receipt_hash} /></dd>`}
        ${salt && html`<dt>${t('co.salt')}</dt><dd><${Hash} value=${salt} /></dd>`}
      </dl>
    </section>`
}

export function OrderTable({ orders, tokens = [], onOpen, caption }) {
  const tokenOf = (address) => tokens.find((tk) => tk.address.toLowerCase() === address.toLowerCase())
  return html`
    <div class="table-wrap" tabindex="0" role="region" aria-label=${caption}>
      <table>
        <caption class="sr-only">${caption}</caption>
        <thead><tr><th scope="col">${t('col.order')}</th><th scope="col">${t('col.sku')}</th>
          <th scope="col">${t('col.amount')}</th><th scope="col">${t('col.state')}</th><th scope="col">${t('col.created')}</th></tr></thead>
        <tbody>
          ${orders.map((o) => {
            const tk = tokenOf(o.token)
            return html`<tr data-testid="order-row" data-state=${o.state}>
              <td>${onOpen ? html`<button type="button" class="link mono" onClick=${() => onOpen(o.order_id)}>${short(o.order_id)}</button>` : html`<span class="mono">${short(o.order_id)}</span>`}</td>
              <td>${o.sku}</td>
              <td>${tk ? `${formatUnits(o.amount, tk.decimals)} ${tk.symbol}` : o.amount}</td>
              <td>${stateLabel(o.state)}</td>
              <td>${formatTime(o.created_at)}</td></tr>`
          })}
        </tbody>
      </table>
    </div>`
}
