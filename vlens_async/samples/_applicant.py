"""A whole applicant: the card sides and face frames of one seed, as its scenario wants them.

This is where a scenario turns into pictures: which card each side shows, whether the sides are
cards at all, and whose face the frames show. The pictures themselves come from :mod:`._cards`,
:mod:`._faces` and :mod:`._photos`; the fields from :mod:`._people`.
"""

from __future__ import annotations

import attrs

from vlens_async.samples import _card_code as cc
from vlens_async.samples._cards import card_side
from vlens_async.samples._faces import capture
from vlens_async.samples._layout import CARD_SIZE
from vlens_async.samples._people import (
    ApplicantFields,
    check_scenario,
    other_card,
    other_person,
    payload_for,
)
from vlens_async.samples._photos import landscape_jpeg


@attrs.frozen(repr=False)
class Applicant:
    """A synthetic applicant: card sides and face frames as JPEG bytes, and the truth they carry.

    ``fields`` describes the card's front (for ``back_of_other_card`` the back belongs to someone
    else). The repr shows no bytes and no personal data.
    """

    seed: int
    scenario: str
    front: bytes
    back: bytes
    faces: tuple[bytes, bytes, bytes]
    fields: ApplicantFields

    def __repr__(self) -> str:
        sizes = "/".join(str(len(f)) for f in self.faces)
        return (
            f"Applicant(seed={self.seed}, scenario={self.scenario!r},"
            f" front=<{len(self.front)} bytes>, back=<{len(self.back)} bytes>,"
            f" faces=<{sizes} bytes>, fields={self.fields!r})"
        )


def _sides(
    key: str, payload: cc.CardPayload, fields: ApplicantFields, scenario: str
) -> tuple[bytes, bytes]:
    """The front and back JPEGs: the card's, another card's back, or two ordinary photos."""
    if scenario == "not_a_card":
        return (
            landscape_jpeg(*CARD_SIZE, f"not-a-card:{key}:front", False),
            landscape_jpeg(*CARD_SIZE, f"not-a-card:{key}:back", False),
        )
    photocopy = scenario == "photocopy"
    front = card_side(payload, fields, side="front", photocopy=photocopy, key=key)
    back_payload, back_fields = payload, fields
    if scenario == "back_of_other_card":
        back_payload, back_fields = other_card(key, fields.national_id)
    back = card_side(back_payload, back_fields, side="back", photocopy=photocopy, key=key)
    return front, back


def _frames(key: str, fields: ApplicantFields, scenario: str) -> tuple[bytes, bytes, bytes]:
    """The three face frames: of the card's person, or of someone else for ``different_person``."""
    person = other_person(key, fields) if scenario == "different_person" else fields.person_id
    return capture(person, key, identical=scenario == "identical_frames")


def make_applicant(seed: int, *, scenario: str = "valid") -> Applicant:
    """Return a synthetic applicant for ``seed`` in ``scenario`` (one of :data:`SCENARIOS`).

    The same seed and scenario always give identical bytes; different scenarios of one seed share
    the person (names, address, face) wherever the scenario allows. Takes about 0.1 s.
    """
    check_scenario(scenario)
    key = str(seed)
    payload, fields = payload_for(seed, scenario)
    front, back = _sides(key, payload, fields, scenario)
    faces = _frames(key, fields, scenario)
    return Applicant(
        seed=seed, scenario=scenario, front=front, back=back, faces=faces, fields=fields
    )
