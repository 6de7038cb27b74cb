"""Every span, event and metric attribute of a busy session, scanned for personal data."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from tests.helpers.emulator import sign_up
from tests.helpers.samples import personal_values
from tests.otel.conftest import Recorded
from vlens_async import AdminLogin, VlensClient
from vlens_async.emulator import RunningEmulator
from vlens_async.errors import DocumentExpiredError
from vlens_async.samples import make_applicant

PHONE = "+201001234567"
PASSWORD = "S3cret-pass!"
# Longer than any endpoint path (52 characters); an image in base64 runs to thousands.
BASE64_RUN = re.compile(r"[A-Za-z0-9+/=_-]{64,}")
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _values(mapping: Mapping[str, Any] | None) -> Iterator[str]:
    for key, value in (mapping or {}).items():
        yield key
        if isinstance(value, list | tuple):
            yield from (str(v) for v in value)
        else:
            yield str(value)


def recorded_text(recorded: Recorded) -> list[str]:
    """Every string the SDK recorded: span names, attributes, events, statuses, resources and
    metric names, descriptions and data point attributes."""
    out: list[str] = []
    for span in recorded.spans():
        out.append(span.name)
        out.extend(_values(span.attributes))
        out.extend(_values(span.resource.attributes))
        out.append(span.status.description or "")
        for event in span.events:
            out.append(event.name)
            out.extend(_values(event.attributes))
    for name, points in recorded.metrics().items():
        out.append(name)
        for point in points:
            out.extend(_values(point.attributes))
    return out


@pytest.mark.usefixtures("no_backoff")
async def test_no_attribute_holds_personal_data(
    vlens_emulator: RunningEmulator, recorded: Recorded
) -> None:
    """Sign-up, a verification with a name check, link, admin image listing by phone and a
    download, an expired card and retried 5xx: no recorded string holds the applicant's name,
    address, birth date or ID, the phone number, a secret, a URL query or base64."""
    a = make_applicant(48)
    expired = make_applicant(49, scenario="expired")
    name = f"{a.fields.first_name} {a.fields.last_names}"
    admin = AdminLogin(
        vlens_emulator.tenancy_name,
        vlens_emulator.admin_username or "",
        vlens_emulator.admin_password or "",
    )
    base = vlens_emulator.base_url
    async with (
        VlensClient(vlens_emulator.api_key, base_url=base, telemetry=recorded.telemetry) as client,
        VlensClient(
            vlens_emulator.api_key, base_url=base, auth=admin, telemetry=recorded.telemetry
        ) as admin_client,
    ):
        token = await sign_up(client, vlens_emulator, PHONE, PASSWORD)
        user = client.for_user(token)
        vlens_emulator.set_faults("503:1x1@id_front,500:1x1@liveness")
        outcome = await user.verify(a.front, a.back, a.faces, name_check_value=name)
        assert outcome.verified
        await user.link_user_to_transaction(outcome.transaction_id)
        refs = await admin_client.list_identity_images(PHONE)
        assert refs.id_front_image
        await admin_client.download_step_image(outcome.transaction_id, refs.id_front_image)
        tx = user.transaction()
        await tx.scan_front(expired.front)
        with pytest.raises(DocumentExpiredError):
            await tx.scan_back(expired.back)
        admin_token = await admin.get_token(admin_client)
    assert admin_token

    text = recorded_text(recorded)
    assert len(recorded.spans()) > 15
    assert recorded.counts("vlens.client.retries")  # the retried calls were recorded
    forbidden = [
        *personal_values(a.fields),
        *personal_values(expired.fields),
        PHONE,
        PHONE.lstrip("+"),
        "%2B" + PHONE.lstrip("+"),
        "emailOrPhoneNumber",
        PASSWORD,
        token,
        admin_token,
        vlens_emulator.api_key,
        vlens_emulator.admin_password or "<none>",
        "Bearer",
    ]
    for value in text:
        for secret in forbidden:
            assert secret not in value, f"{secret!r} recorded in {value!r}"
        assert "?" not in value, value
        assert not re.search(r"\d{14}", value), value
        assert not BASE64_RUN.search(UUID.sub("", value)), value
