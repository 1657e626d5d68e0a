import { html } from './html.js'
import { lang, switchLanguage, t } from './i18n.js'
import { useSignal } from './signal.js'

const LINKS = [
  ['home', '/', 'nav.home'], ['checkout', '/checkout', 'nav.checkout'], ['merchant', '/merchant', 'nav.merchant'],
  ['audit', '/audit', 'nav.audit'], ['wallet-setup', '/wallet-setup', 'nav.wallet'],
]

export function Layout({ page, children }) {
  useSignal(lang)
  return html`
    <header class="top">
      <a class="brand" href="/">Cardless</a>
      <nav aria-label=${t('nav.label')}>
        <ul>
          ${LINKS.map(([id, href, key]) => html`
            <li><a href=${href} aria-current=${id === page ? 'page' : undefined}>${t(key)}</a></li>`)}
        </ul>
      </nav>
      <button type="button" class="lang" lang=${lang.value === 'en' ? 'zh-CN' : 'en'}
        title=${t('lang.label')} onClick=${switchLanguage}>${t('lang.switch')}</button>
    </header>
    <main id="main" tabindex="-1">${children}</main>`
}

// An aria-live message: errors are alerts (announced at once), the rest polite status.
export function Notice({ kind = 'info', children, testid }) {
  if (!children) return null
  return html`<p class=${`notice ${kind}`} role=${kind === 'error' ? 'alert' : 'status'} data-testid=${testid}>${children}</p>`
}

export function Hash({ value, label }) {
  if (!value) return null
  return html`<code class="hash" title=${value} aria-label=${label}>${value}</code>`
}
