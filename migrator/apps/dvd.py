"""DeepVideoDiscovery: one NanoVectorDB per video, a record per clip.

DVD stores ``caption`` as ``"[From {t1} to {t2} seconds]\\n" + caption`` but embedded the
bare caption, so exactly that prefix is taken off. Its settings (the model, the dimension)
live in the checkout's ``dvd/config.py``: see :mod:`migrator.apps.appconfig`.
"""

from __future__ import annotations

import re

from migrator.apps.base import Field
from migrator.files.nvdb import NanoFile

# DVD's time helper prints whole hours and minutes and float seconds: 00:01:10.0
DVD_PREFIX = re.compile(r"\A\[From [0-9:.eE+-]+ to [0-9:.eE+-]+ seconds\]\n")


class Dvd(Field):
    name = "dvd"
    application = "dvd"
    label = "DVD"
    title = "DeepVideoDiscovery"

    def looks_like(self, nf: NanoFile) -> bool:
        return looks_like_dvd(nf)

    def __init__(self):
        super().__init__("caption", "dvd")

    def text_of(self, record: dict, index: int, nf: NanoFile) -> str:
        value = self._checked(self.value(record), "caption", index, record, nf)
        return self._checked(DVD_PREFIX.sub("", value, count=1), "caption", index, record, nf)


DVD = Dvd()


def looks_like_dvd(nf: NanoFile) -> bool:
    """DVD's additional_data, or any record shaped like DVD's (so one damaged record
    is reported as such, not as a different kind of file)."""
    ad = nf.additional_data
    if isinstance(ad, dict) and "video_length" in ad and "video_file_root" in ad:
        return True
    return any(isinstance(r.get("caption"), str) and "time_start_secs" in r for r in nf.data[:64])
