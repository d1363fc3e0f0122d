"""Catalogue entries (named demographies, network presets) as data with sources, as stdpopsim's models.

Each entry has an id, a one-line description and its citation (paper and DOI). Catalogues are
registered by kind; an unknown id is a ``ParamError`` listing the valid ones.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from .errors import ParamError

V = TypeVar("V")


@dataclass(frozen=True, kw_only=True)
class Citation:
    """A published source: authors and year as cited, title, journal and DOI."""

    authors: str
    year: int
    title: str
    journal: str
    doi: str

    def __str__(self) -> str:
        return f"{self.authors} ({self.year}) {self.title}. {self.journal}. doi:{self.doi}"


@dataclass(frozen=True, kw_only=True)
class Entry(Generic[V]):
    """One catalogue entry: ``value`` is what the code uses (epochs, an architecture)."""

    id: str
    description: str
    citations: tuple[Citation, ...]
    value: V
    extra: Mapping[str, Any] = field(default_factory=dict)


class Catalogue(Generic[V]):
    """Entries of one kind by id, in registration order."""

    def __init__(self, kind: str, key: str):
        self.kind = kind  # e.g. "demography"
        self.key = key  # the config key that names an entry, for errors (e.g. "preset")
        self._entries: dict[str, Entry[V]] = {}

    def add(self, entry: Entry[V]) -> Entry[V]:
        if entry.id in self._entries:
            raise KeyError(f"{self.kind} catalogue: {entry.id!r} registered twice")
        if not entry.citations:
            raise ValueError(f"{self.kind} catalogue: {entry.id!r} needs a citation")
        self._entries[entry.id] = entry
        return entry

    def get(self, id_: str) -> Entry[V]:
        """The entry ``id_``; an unknown id names the valid ones."""
        try:
            return self._entries[id_]
        except (KeyError, TypeError):
            raise ParamError(self.key, f"unknown {self.kind} {id_!r} (known: {', '.join(self._entries)})") from None

    def __contains__(self, id_: object) -> bool:
        return id_ in self._entries

    def __iter__(self) -> Iterator[Entry[V]]:
        return iter(self._entries.values())

    def ids(self) -> list[str]:
        return list(self._entries)


# published sources the entries cite
TORADA_2019 = Citation(authors="Torada L, Lorenzon L, Beddis A, Isildak U, Pattini L, Mathieson S, Fumagalli M",
                       year=2019, title="ImaGene: a convolutional neural network to quantify natural selection "
                       "from genomic data", journal="BMC Bioinformatics 20(Suppl 9):337",
                       doi="10.1186/s12859-019-2927-x")
MARTH_2004 = Citation(authors="Marth GT, Czabarka E, Murvai J, Sherry ST", year=2004,
                      title="The allele frequency spectrum in genome-wide human variation data reveals signals "
                      "of differential demographic history in three large world populations",
                      journal="Genetics 166(1):351-372", doi="10.1534/genetics.166.1.351")
