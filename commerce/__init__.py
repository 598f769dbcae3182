"""Selling in live shows: plain domain code over SQLAlchemy, one small module per concept.

`catalog` (products, variants, shipping rate), `lineup` (a show's products), `inventory` (stock, holds and
their expiry), `limits` (purchase limits), `idempotency` (Idempotency-Key), `availability` (fast sold-out
refusals), `flash_sales` and `admission` (queue and lottery), `orders` (checkout, state machine, refunds),
`payments` (provider interface and the `test` provider), `jobs` (durable job handlers). The guarantees are
written down in docs/commerce.md.
"""
