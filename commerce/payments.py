"""Payments behind one provider interface, shaped after Stripe's PaymentIntents.

An order gets one intent (created with the amount, currency and an idempotency key, answering a client
secret and a status); it is confirmed with a payment method, possibly several times after declines; the
result may also arrive later as a signed webhook event; refunds go through the same provider. The `test`
provider (the embedded default) needs no account: every payment method succeeds except the documented
decline card 4000 0000 0000 0002, and refunds succeed. It keeps no state of its own, so any node can confirm
any intent: the intent id carries the amount and currency, and ids and secrets are HMACs of the server key.
Provider calls are network calls in general, so callers make them outside database transactions.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from accounts.errors import DomainError, Invalid, Unauthorized

IntentStatus = Literal["requires_payment_method", "requires_confirmation", "processing", "succeeded", "canceled"]
EventType = Literal["payment_intent.succeeded", "payment_intent.payment_failed"]

DECLINE_CARD = "4000000000000002"
"""The test provider declines this card number (as Stripe's test mode does), and accepts every other."""
SIGNATURE_HEADER = "Pinstream-Signature"
_TEST_INTENT = re.compile(r"^pi_test_(\d+)_([A-Z]{3})_([0-9a-f]{16})_([0-9a-f]{16})$")


class PaymentDeclined(DomainError):
    """The provider refused the payment method; the order stays reserved so another one can be tried."""

    http_status = 402


@dataclass(frozen=True)
class PaymentIntent:
    id: str
    amount_minor: int
    currency: str
    status: IntentStatus
    client_secret: str
    """What a browser SDK needs to confirm the intent itself (Stripe.js); never logged."""
    failure_code: str | None = None


@dataclass(frozen=True)
class RefundResult:
    id: str
    intent_id: str
    amount_minor: int
    succeeded: bool


@dataclass(frozen=True)
class ProviderEvent:
    """A verified webhook event about an intent."""

    id: str
    type: EventType
    intent: PaymentIntent


class PaymentProvider(Protocol):
    """What orders need from a payment provider; Stripe's PaymentIntents API maps onto it one to one."""

    name: str

    async def create_intent(self, amount_minor: int, currency: str, *, idempotency_key: str,
                            metadata: Mapping[str, str]) -> PaymentIntent:
        """A new intent, or the same one again for the same idempotency key."""
        ...

    async def confirm_intent(self, intent_id: str, payment_method: str) -> PaymentIntent:
        """Try to collect the intent's amount with a payment method (a card, a saved method's id)."""
        ...

    async def refund(self, intent_id: str, amount_minor: int, *, idempotency_key: str) -> RefundResult:
        """Give back (part of) a succeeded intent's amount; the same key refunds once."""
        ...

    def parse_webhook(self, payload: bytes, signature: str | None) -> ProviderEvent:
        """Verify and decode a webhook delivery; Unauthorized("bad_signature") if it is not genuine."""
        ...


def normalize_card(payment_method: str) -> str:
    """Digits of a card number, or the payment method id unchanged (e.g. "pm_card_visa")."""
    digits = re.sub(r"[\s-]", "", payment_method)
    return digits if digits.isdigit() else payment_method.strip()


class TestProvider:
    """The built-in provider for demos and tests: deterministic, stateless, no network."""

    __test__ = False  # not a pytest test class, whatever its name
    name = "test"

    def __init__(self, secret: str) -> None:
        self._secret = secret.encode()

    def _mac(self, text: str) -> str:
        return hmac.new(self._secret, text.encode(), hashlib.sha256).hexdigest()

    def _intent(self, intent_id: str, status: IntentStatus, failure_code: str | None = None) -> PaymentIntent:
        """The intent an id stands for, after checking that this provider (this server key) issued it."""
        match = _TEST_INTENT.match(intent_id)
        if match is None:
            raise Invalid("unknown_intent", "no such payment intent", "intent_id")
        amount, currency, nonce, signature = match.groups()
        if not hmac.compare_digest(signature, self._mac(f"id:{amount}:{currency}:{nonce}")[:16]):
            raise Invalid("unknown_intent", "no such payment intent", "intent_id")
        return PaymentIntent(id=intent_id, amount_minor=int(amount), currency=currency, status=status,
                             client_secret=f"{intent_id}_secret_{self._mac('secret:' + intent_id)[:24]}",
                             failure_code=failure_code)

    async def create_intent(self, amount_minor: int, currency: str, *, idempotency_key: str,
                            metadata: Mapping[str, str]) -> PaymentIntent:
        """The same key and amount always give the same intent, as Stripe's idempotency keys do."""
        if amount_minor < 0 or not re.fullmatch(r"[A-Z]{3}", currency):
            raise Invalid("invalid_amount", "amount must be non-negative minor units of an ISO currency")
        nonce = self._mac(f"nonce:{idempotency_key}")[:16]
        signature = self._mac(f"id:{amount_minor}:{currency}:{nonce}")[:16]
        return self._intent(f"pi_test_{amount_minor}_{currency}_{nonce}_{signature}", "requires_payment_method")

    async def confirm_intent(self, intent_id: str, payment_method: str) -> PaymentIntent:
        if normalize_card(payment_method) == DECLINE_CARD:
            return self._intent(intent_id, "requires_payment_method", "card_declined")
        return self._intent(intent_id, "succeeded")

    async def refund(self, intent_id: str, amount_minor: int, *, idempotency_key: str) -> RefundResult:
        intent = self._intent(intent_id, "succeeded")
        if not 0 < amount_minor <= intent.amount_minor:
            raise Invalid("invalid_refund", "refund between 1 minor unit and the amount paid")
        return RefundResult(id=f"re_test_{self._mac('refund:' + idempotency_key)[:24]}", intent_id=intent_id,
                            amount_minor=amount_minor, succeeded=True)

    def webhook(self, event_type: EventType, intent: PaymentIntent) -> tuple[bytes, str]:
        """A signed delivery as the provider would POST it: (body, value of the signature header)."""
        body = json.dumps({"id": f"evt_test_{self._mac(event_type + intent.id)[:24]}", "type": event_type,
                           "data": {"object": {"id": intent.id, "status": intent.status,
                                               "failure_code": intent.failure_code}}}).encode()
        return body, self._mac("webhook:" + body.decode())

    def parse_webhook(self, payload: bytes, signature: str | None) -> ProviderEvent:
        try:
            text = payload.decode()
        except UnicodeDecodeError:
            raise Unauthorized("bad_signature", "the webhook signature does not match") from None
        if not signature or not hmac.compare_digest(signature, self._mac("webhook:" + text)):
            raise Unauthorized("bad_signature", "the webhook signature does not match")
        try:
            event = json.loads(text)
            event_type = event["type"]
            found = event["data"]["object"]
            event_id, intent_id, failure = str(event["id"]), str(found["id"]), found.get("failure_code")
        except (ValueError, KeyError, TypeError):
            raise Invalid("bad_event", "the webhook body is not an event") from None
        if event_type == "payment_intent.succeeded":
            return ProviderEvent(id=event_id, type="payment_intent.succeeded",
                                 intent=self._intent(intent_id, "succeeded"))
        if event_type == "payment_intent.payment_failed":
            return ProviderEvent(id=event_id, type="payment_intent.payment_failed",
                                 intent=self._intent(intent_id, "requires_payment_method",
                                                     None if failure is None else str(failure)))
        raise Invalid("unknown_event", "unsupported event type", "type")
