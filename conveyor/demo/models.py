"""The events of the link-click pipeline: a pydantic discriminated union tagged by `type`.

The wire format is the original's: `{"type": "LINK_CLICK", "data": {"id", "accountId", "country",
"destination", "latitude", "longitude", "timestamp"}}` (camelCase keys, ISO 8601 timestamp).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

# ISO 3166-1 alpha-2, as Cloudflare's CF-IPCountry sends it ("XX" for unknown, "T1" for Tor).
CountryCode = Annotated[str, Field(pattern=r"^[A-Z0-9]{2}$")]


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LinkClickData(_Wire):
    id: Annotated[str, Field(min_length=1, max_length=64)]  # the link's id
    accountId: Annotated[str, Field(min_length=1, max_length=64)]
    country: CountryCode | None
    destination: Annotated[str, Field(min_length=1, max_length=2048)]
    latitude: Annotated[float, Field(ge=-90, le=90)] | None
    longitude: Annotated[float, Field(ge=-180, le=180)] | None
    timestamp: dt.datetime  # when the visitor clicked (UTC)


class LinkClick(_Wire):
    type: Literal["LINK_CLICK"]
    data: LinkClickData


class LinkMissData(_Wire):
    id: Annotated[str, Field(min_length=1, max_length=256)]  # the link id that was asked for
    country: CountryCode | None
    timestamp: dt.datetime


class LinkMiss(_Wire):
    """A visit to a link that does not exist (a typo, a deleted link): worth knowing about."""

    type: Literal["LINK_MISS"]
    data: LinkMissData


QueueMessage = Annotated[LinkClick | LinkMiss, Field(discriminator="type")]
