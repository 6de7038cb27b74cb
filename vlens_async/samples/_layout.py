"""Where things sit: the sizes of card sides and face frames, and the boxes their codes fill.

The drawers put each code in its box and the readers look for it there (as fractions of the image
size, so a scaled copy reads too); both take the boxes from here, so they cannot drift apart.
"""

from __future__ import annotations

from typing import Final

CARD_SIZE: Final = (1600, 1000)
FACE_SIZE: Final = (720, 960)
# Where the codes sit, in pixels of the original size (black border box; the quiet zone is outside).
FRONT_CODE: Final = (56, 700, 616, 940)
BACK_CODE: Final = (984, 700, 1544, 940)
FACE_CODE: Final = (400, 790, 680, 934)
