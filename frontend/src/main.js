// One bundle for every page: the shell's data-page names which one to render.
import { render } from 'preact'
import { html } from './html.js'
import { Layout } from './layout.js'
import { Home } from './pages/home.js'
import { Checkout } from './pages/checkout.js'
import { Merchant } from './pages/merchant.js'
import { Audit } from './pages/audit.js'
import { WalletSetup } from './pages/wallet-setup.js'

const PAGES = { home: Home, checkout: Checkout, merchant: Merchant, audit: Audit, 'wallet-setup': WalletSetup }
const root = document.getElementById('app')
const page = root.dataset.page
const Page = PAGES[page] ?? Home
root.textContent = ''
render(html`<${Layout} page=${page}><${Page} /><//>`, root)
