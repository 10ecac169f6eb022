"""Who made the DICOM objects: the algorithm (model name, version, sha256 of its weights) and the software."""

from __future__ import annotations

from dataclasses import dataclass

import highdicom as hd
from pydicom.sr.codedict import codes

from .. import __version__


@dataclass(frozen=True)
class Algorithm:
    name: str  # e.g. "DrasCLR demo-v5"; "DrasCLR densitometry" without a model
    version: str
    sha256: str = ""
    manufacturer: str = "DrasCLRSlicer"

    @classmethod
    def from_card(cls, card: dict | None) -> Algorithm:
        if not card:
            return cls("DrasCLR densitometry", __version__)
        name = str(card.get("name") or card.get("version") or "model")
        return cls(f"DrasCLR {name}"[:64], str(card.get("version") or __version__), str(card.get("sha256") or ""))

    @property
    def software_version(self) -> str:
        return f"drasclr {__version__}"

    def parameters(self) -> dict[str, str]:
        return {"sha256": self.sha256} if self.sha256 else {}

    def seg_identification(self) -> hd.AlgorithmIdentificationSequence:
        return hd.AlgorithmIdentificationSequence(name=self.name, family=codes.cid7162.ArtificialIntelligence,
                                                  version=self.version, source=self.manufacturer,
                                                  parameters=self.parameters() or None)

    def sr_identification(self) -> hd.sr.AlgorithmIdentification:
        return hd.sr.AlgorithmIdentification(name=self.name, version=self.version,
                                             parameters=[f"{k}={v}" for k, v in self.parameters().items()] or None)
