"""Content owner registry: owner domain by ``content_id`` prefix (CT 0.1 section 7.3).

CT 0.1 section 7.3, "Content owner resolution": "Telemetry consumers resolve content owner
identity from ``content_url`` domains. [...] Events identified only by ``content_id`` (e.g.,
cached groundings where the URL was not preserved, or marketplace API content with no canonical
URL) cannot be resolved by domain alone. Telemetry consumers SHOULD support ``content_id``
prefix-based resolution as a secondary path when content owners register their identifier
schemes, but this is not yet a normative requirement."

Input: a registry document (UTF-8 JSON, the file named by ``CTPIPE_OWNER_REGISTRY``)::

    {"owners": [{"domain": "wirecutter.com", "content_id_prefixes": ["wirecutter:"]},
                {"domain": "globe-science.com", "content_id_prefixes": ["doi:10.5555/gs."]}]}

* ``domain``: the owner's registrable domain (eTLD+1 under the Public Suffix List, as
  ``schemas.urls.owner_domain`` derives it from URLs; case and a trailing dot are normalised). A
  host below it (``www.wirecutter.com``), a public suffix or an IP address is an error: funnel rows
  are keyed by registrable domain, so anything else would split one owner's rows.
* ``content_id_prefixes``: non-empty strings, matched case-sensitively against the start of a
  ``content_id``. One prefix registered to two domains is an error; the same domain listed twice
  is merged. Unknown fields are ignored (room for names, verification state, ...).

Output: ``OwnerRegistry.resolve(content_id) -> owner domain | None``, the domain of the LONGEST
registered prefix the content_id starts with (``doi:10.5555/gs.`` wins over ``doi:``). It is the
secondary path only: callers apply it to events that have a content_id and no URL-derived owner
(``processors.normalize``; the simulator's truth in ``producers.generator_truth`` does the same).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schemas.codec import loads
from schemas.urls import owner_domain

__all__ = ["OwnerRegistry", "OwnerRegistryError", "load", "parse"]


class OwnerRegistryError(ValueError):
    """The registry document is invalid (one line, says where and why)."""


def registrable_domain(value: str) -> str:
    """``value`` as a registrable domain (lower-cased, no trailing dot); raise if it is not one."""
    domain = value.strip().lower().rstrip(".")
    if not domain:
        raise OwnerRegistryError(f"{value!r} is not a host name")
    labels = domain.split(".")
    for label in labels:
        if not label or len(label) > 63 or label.startswith("-") or label.endswith("-"):
            raise OwnerRegistryError(f"{value!r} is not a host name")
        if not all(c.isalnum() or c == "-" for c in label):
            raise OwnerRegistryError(f"{value!r} is not a host name")
    top = owner_domain(f"https://{domain}/")
    if top is None or top != domain or all(c.isdigit() for c in labels[-1]):
        if top and top != domain and domain.endswith("." + top):
            raise OwnerRegistryError(f"{value!r} is not a registrable domain (register {top!r})")
        raise OwnerRegistryError(f"{value!r} is not a registrable domain")
    return domain


@dataclass(frozen=True, slots=True)
class OwnerRegistry:
    """Registered ``content_id`` prefixes -> owner domain. Immutable and hashable.

    Build it with ``parse``/``load``/``from_owners`` (they validate); ``prefixes`` is the sorted
    ``(prefix, domain)`` table, the lookup structures derive from it.
    """

    prefixes: tuple[tuple[str, str], ...] = ()
    _table: dict[str, str] = field(default_factory=dict, init=False, repr=False, compare=False, hash=False)
    _lengths: tuple[int, ...] = field(default=(), init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        table = dict(self.prefixes)
        if len(table) != len(self.prefixes):
            raise OwnerRegistryError("a content_id prefix is listed twice")
        object.__setattr__(self, "_table", table)
        # Longest first: the first hit is the longest registered prefix.
        object.__setattr__(self, "_lengths", tuple(sorted({len(p) for p in table}, reverse=True)))

    @classmethod
    def from_owners(cls, owners: Iterable[tuple[str, Iterable[str]]]) -> OwnerRegistry:
        """``(domain, prefixes)`` pairs -> a validated registry (the rules of the module docstring)."""
        return parse_document({"owners": [{"domain": d, "content_id_prefixes": list(p)} for d, p in owners]})

    def resolve(self, content_id: str) -> str | None:
        """Owner domain of the longest registered prefix ``content_id`` starts with, else None."""
        table = self._table
        n = len(content_id)
        for length in self._lengths:
            if length <= n:
                domain = table.get(content_id[:length])
                if domain is not None:
                    return domain
        return None

    def __bool__(self) -> bool:
        return bool(self.prefixes)

    def __len__(self) -> int:
        return len(self.prefixes)

    def domains(self) -> list[str]:
        return sorted({d for _, d in self.prefixes})

    def to_document(self) -> dict[str, Any]:
        """The registry as a document ``parse`` accepts (owners and prefixes sorted)."""
        by_domain: dict[str, list[str]] = {}
        for prefix, domain in self.prefixes:
            by_domain.setdefault(domain, []).append(prefix)
        return {
            "owners": [{"domain": d, "content_id_prefixes": sorted(by_domain[d])} for d in sorted(by_domain)]
        }


def parse_document(doc: Any) -> OwnerRegistry:
    """A decoded registry document -> ``OwnerRegistry``; ``OwnerRegistryError`` when invalid."""
    if not isinstance(doc, Mapping):
        raise OwnerRegistryError('the document is not a JSON object {"owners": [...]}')
    owners = doc.get("owners")
    if not isinstance(owners, list):
        raise OwnerRegistryError('"owners" is missing or not a list')
    owner_of: dict[str, str] = {}
    for i, entry in enumerate(owners):
        where = f"owners[{i}]"
        if not isinstance(entry, Mapping):
            raise OwnerRegistryError(f"{where} is not an object")
        raw_domain = entry.get("domain")
        if not isinstance(raw_domain, str):
            raise OwnerRegistryError(f"{where}.domain is missing or not a string")
        try:
            domain = registrable_domain(raw_domain)
        except OwnerRegistryError as exc:
            raise OwnerRegistryError(f"{where}.domain: {exc}") from None
        prefixes = entry.get("content_id_prefixes")
        if not isinstance(prefixes, list):
            raise OwnerRegistryError(f"{where}.content_id_prefixes is missing or not a list")
        for j, prefix in enumerate(prefixes):
            if not isinstance(prefix, str) or not prefix.strip():
                raise OwnerRegistryError(f"{where}.content_id_prefixes[{j}] is not a non-empty string")
            other = owner_of.setdefault(prefix, domain)
            if other != domain:
                raise OwnerRegistryError(
                    f"content_id prefix {prefix!r} is registered to two domains: {other!r} and {domain!r}"
                )
    return OwnerRegistry(tuple(sorted(owner_of.items())))


def parse(raw: bytes | str) -> OwnerRegistry:
    """Registry JSON -> ``OwnerRegistry``; ``OwnerRegistryError`` when undecodable or invalid."""
    try:
        doc = loads(raw)
    except ValueError as exc:
        raise OwnerRegistryError(f"not JSON: {exc}") from None
    return parse_document(doc)


def load(path: Path | str) -> OwnerRegistry:
    """The registry file at ``path``; ``OwnerRegistryError`` (message starts with the path)."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise OwnerRegistryError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        return parse(raw)
    except OwnerRegistryError as exc:
        raise OwnerRegistryError(f"{path}: {exc}") from None
