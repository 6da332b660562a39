"""What the API accepts and answers, as marshmallow schemas: every field bounded, every error naming its field."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation

from babel.numbers import get_currency_precision
from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates_schema

from delivery.responses import is_tender
from segments.event_times import implausible
from segments.imports.values import printable_text
from segments.models import EMAIL_LENGTH, IDENTIFIER_LENGTH

MAX_VALUE = Decimal(10) ** 12  # a trillion in the major unit: far above any order, far below BIGINT minor units
MAX_PLACES = 6
MAX_ID = 2**63 - 1
_DECIMAL_TEXT = re.compile(r"-?[0-9]{1,20}(?:\.[0-9]{1,20})?")  # a sign, so "-1" meets the range check as -1 does
_CLICK = re.compile(r"([1-9][0-9]{0,17})\.([A-Za-z0-9_.-]{1,64})")


class Amount(fields.Field):
    """A non-negative amount in the currency's major unit: a decimal string ("12.50") or a JSON number."""

    def _deserialize(self, value, attr, data, **kwargs) -> Decimal:
        if isinstance(value, str):
            if not _DECIMAL_TEXT.fullmatch(value):
                raise ValidationError('must be a decimal number like "12.50"')
            amount = Decimal(value)
        elif isinstance(value, (int, Decimal)) and not isinstance(value, bool):
            amount = Decimal(value)
        else:
            raise ValidationError('must be a decimal string like "12.50" or a number')
        try:
            if not amount.is_finite() or amount < 0 or amount > MAX_VALUE:
                raise ValidationError(f"must be between 0 and {MAX_VALUE:,}")
        except InvalidOperation:
            raise ValidationError("must be a number") from None
        if -amount.as_tuple().exponent > MAX_PLACES:
            raise ValidationError(f"must have at most {MAX_PLACES} decimal places")
        return amount

    def _serialize(self, value, attr, obj, **kwargs):
        return None if value is None else str(value)


class Currency(fields.String):
    """The ISO 4217 code of a currency in use (``delivery.responses.is_tender``), upper-cased."""

    def _deserialize(self, value, attr, data, **kwargs) -> str:
        code = super()._deserialize(value, attr, data, **kwargs)
        if not re.fullmatch(r"[A-Za-z]{3}", code) or not is_tender(code.upper()):
            raise ValidationError("must be the ISO 4217 code of a currency in use, like EUR")
        return code.upper()


class ConversionIn(Schema):
    """A conversion from a shop: the order, its value and currency, and who bought (email, contact or click).

    ``click`` is the ``patron_click`` cookie value ``D.TOKEN``; the schema checks its signature with the
    ``signer`` it is built with and yields the delivery id as ``delivery_id``. Unknown fields are an error.
    """

    order_id = fields.String(required=True, validate=[validate.Length(min=1, max=IDENTIFIER_LENGTH), printable_text])
    value = Amount(required=True)
    currency = Currency(required=True)
    email = fields.String(validate=[validate.Length(min=3, max=EMAIL_LENGTH), printable_text])
    contact_id = fields.Integer(strict=True, validate=validate.Range(min=1, max=MAX_ID))
    click = fields.String(validate=validate.Length(max=128))
    occurred_at = fields.AwareDateTime(format="iso")

    def __init__(self, *, signer, now: datetime | None = None, **kwargs):
        super().__init__(**kwargs)
        self.signer = signer
        self.now = now

    @validates_schema
    def _check(self, data, **kwargs):
        if not any(data.get(name) is not None for name in ("email", "contact_id", "click")):
            raise ValidationError("one of email, contact_id or click is required", "email")
        if "click" in data:
            data["delivery_id"] = self._delivery_id(data.pop("click"))
        occurred = data.get("occurred_at")
        if occurred is not None:
            problem = implausible(occurred, self.now or datetime.now(timezone.utc))
            if problem is not None:
                raise ValidationError(problem, "occurred_at")

    def _delivery_id(self, click: str) -> int:
        match = _CLICK.fullmatch(click)
        if match is None or not self.signer.verify(match.group(2), "c", int(match.group(1))):
            raise ValidationError("not a valid patron_click value", "click")
        return int(match.group(1))


class PixelConversionIn(ConversionIn):
    """The thank-you-page pixel's query: unknown parameters (cache busters, analytics tags) are ignored."""

    class Meta:
        unknown = EXCLUDE


class ConversionOut(Schema):
    """A recorded conversion as the API answers it; ``value`` is a decimal string in the major unit."""

    id = fields.Integer()
    order_id = fields.String(attribute="external_id")
    value = fields.Method("_value")
    currency = fields.String()
    contact_id = fields.Integer()
    delivery_id = fields.Integer()
    run_id = fields.Integer()
    occurred_at = fields.AwareDateTime(format="iso")

    def _value(self, response) -> str | None:
        if response.value_minor is None or response.currency is None:
            return None
        places = get_currency_precision(response.currency)
        return str(Decimal(response.value_minor).scaleb(-places))
