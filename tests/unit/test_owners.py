"""schemas.owners: the content owner registry (CT 0.1 section 7.3 content_id prefix resolution)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from schemas.codec import dumps
from schemas.owners import OwnerRegistry, OwnerRegistryError, load, parse, parse_document

DOC = {
    "owners": [
        {"domain": "wirecutter.com", "content_id_prefixes": ["wirecutter:"], "name": "Wirecutter"},
        {"domain": "FT.com.", "content_id_prefixes": ["ft:", "ft:"]},
        {"domain": "crossref-member.org", "content_id_prefixes": ["doi:"]},
        {"domain": "globe-science.com", "content_id_prefixes": ["doi:10.5555/gs."]},
        {"domain": "wirecutter.com", "content_id_prefixes": ["wc-"]},
    ],
    "comment": "unknown fields are ignored",
}


def test_parse_resolves_by_longest_registered_prefix() -> None:
    reg = parse(dumps(DOC))
    assert reg.resolve("wirecutter:best-wireless-headphones-2026") == "wirecutter.com"
    assert reg.resolve("wc-17") == "wirecutter.com"  # one domain listed twice: merged
    assert reg.resolve("ft:abc123") == "ft.com"  # domain normalised (case, trailing dot)
    assert reg.resolve("doi:10.5555/gs.1001") == "globe-science.com"  # longest prefix wins
    assert reg.resolve("doi:10.5555/gs") == "crossref-member.org"  # shorter than the longer prefix
    assert reg.resolve("doi:10.1000/182") == "crossref-member.org"
    assert reg.resolve("FT:abc") is None  # case-sensitive
    assert reg.resolve("ft") is None and reg.resolve("") is None and reg.resolve("nyt:1") is None
    assert reg.domains() == ["crossref-member.org", "ft.com", "globe-science.com", "wirecutter.com"]
    assert len(reg) == 5 and reg and not OwnerRegistry()


def test_round_trip_and_value_semantics() -> None:
    reg = parse(dumps(DOC))
    assert parse_document(reg.to_document()) == reg
    again = OwnerRegistry.from_owners(
        [
            ("globe-science.com", ["doi:10.5555/gs."]),
            ("wirecutter.com", ["wc-", "wirecutter:"]),
            ("ft.com", ["ft:"]),
            ("crossref-member.org", ["doi:"]),
        ]
    )
    assert again == reg and hash(again) == hash(reg)  # usable in frozen, hashable configs
    assert {reg: 1}[again] == 1


def test_load_reads_a_file_and_prefixes_errors_with_the_path(tmp_path: Path) -> None:
    path = tmp_path / "owners.json"
    path.write_bytes(dumps(DOC))
    assert load(path).resolve("ft:1") == "ft.com"
    path.write_text("{not json")
    with pytest.raises(OwnerRegistryError, match=rf"^{path}: not JSON"):
        load(path)
    with pytest.raises(OwnerRegistryError, match=r"missing\.json: cannot read"):
        load(tmp_path / "missing.json")


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], r"not a JSON object"),
        ({}, r'"owners" is missing or not a list'),
        ({"owners": {"a.com": ["a:"]}}, r'"owners" is missing or not a list'),
        ({"owners": ["a.com"]}, r"owners\[0\] is not an object"),
        ({"owners": [{"content_id_prefixes": ["a:"]}]}, r"owners\[0\]\.domain is missing"),
        ({"owners": [{"domain": "a.com"}]}, r"owners\[0\]\.content_id_prefixes is missing"),
        ({"owners": [{"domain": "a.com", "content_id_prefixes": "a:"}]}, r"not a list"),
        ({"owners": [{"domain": "a.com", "content_id_prefixes": [""]}]}, r"prefixes\[0\] is not a non-empty"),
        ({"owners": [{"domain": "a.com", "content_id_prefixes": ["a:", " "]}]}, r"prefixes\[1\]"),
        ({"owners": [{"domain": "a.com", "content_id_prefixes": [7]}]}, r"prefixes\[0\]"),
        (
            {"owners": [{"domain": "www.a.com", "content_id_prefixes": []}]},
            r"not a registrable domain \(register 'a.com'\)",
        ),
        (
            {"owners": [{"domain": "co.uk", "content_id_prefixes": []}]},
            r"'co.uk' is not a registrable domain",
        ),
        ({"owners": [{"domain": "github.io", "content_id_prefixes": []}]}, r"not a registrable domain"),
        ({"owners": [{"domain": "10.0.0.1", "content_id_prefixes": []}]}, r"not a registrable domain"),
        ({"owners": [{"domain": "https://a.com/", "content_id_prefixes": []}]}, r"not a host name"),
        ({"owners": [{"domain": "a_b.com", "content_id_prefixes": []}]}, r"not a host name"),
        ({"owners": [{"domain": "", "content_id_prefixes": []}]}, r"not a host name"),
        (
            {
                "owners": [
                    {"domain": "a.com", "content_id_prefixes": ["x:"]},
                    {"domain": "b.com", "content_id_prefixes": ["y:", "x:"]},
                ]
            },
            r"prefix 'x:' is registered to two domains: 'a.com' and 'b.com'",
        ),
    ],
)
def test_invalid_documents_are_rejected_with_a_clear_message(doc: object, message: str) -> None:
    with pytest.raises(OwnerRegistryError, match=message) as err:
        parse(dumps(doc))
    assert "\n" not in str(err.value)  # one line


def test_registrable_domains_below_private_suffixes_and_idns_are_accepted() -> None:
    reg = OwnerRegistry.from_owners(
        [("datasci.github.io", ["dsgh:"]), ("herald-tribune.co.uk", ["htuk:"]), ("bücher.de", ["b:"])]
    )
    assert reg.resolve("dsgh:1") == "datasci.github.io" and reg.resolve("b:1") == "bücher.de"


# --- properties ---------------------------------------------------------------------------------------
_ALPHABET = "ab:/.-1"
_KEYS = ("owners", "domain", "content_id_prefixes", "name")
_prefixes = st.text(alphabet=_ALPHABET, min_size=1, max_size=6)
_registries = st.dictionaries(_prefixes, st.sampled_from(["a.com", "b.org", "c.co.uk"]), max_size=12)


@settings(max_examples=300, deadline=None)
@given(_registries, st.text(alphabet=_ALPHABET, max_size=10))
def test_resolve_is_the_longest_matching_prefix(table: dict[str, str], content_id: str) -> None:
    reg = OwnerRegistry.from_owners(
        (d, [p for p, dd in table.items() if dd == d]) for d in sorted(set(table.values()))
    )
    hits = [p for p in table if content_id.startswith(p)]
    assert reg.resolve(content_id) == (table[max(hits, key=len)] if hits else None)
    assert parse_document(reg.to_document()) == reg


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_resolve_never_raises_on_arbitrary_text(content_id: str) -> None:
    reg = parse(dumps(DOC))
    assert reg.resolve(content_id) in {None, *reg.domains()}


_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-1000, 1000)
    | st.sampled_from(["a.com", "b.org", "www.a.com", "x:", "doi:"])
    | st.text(alphabet="a.-:/ ", max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(_KEYS), inner, max_size=3),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=200), _json.map(lambda d: dumps({"owners": d}))))
def test_any_input_parses_or_raises_only_the_one_line_registry_error(raw: bytes) -> None:
    try:
        reg = parse(raw)
    except OwnerRegistryError as exc:
        assert "\n" not in str(exc)
    else:
        assert parse_document(reg.to_document()) == reg


# --- wiring: WorkerConfig and `ctpipe worker` start-up --------------------------------------------
def test_worker_config_carries_the_registry_and_stays_hashable(tmp_path: Path) -> None:
    from ctpipe.worker import WorkerConfig, with_owner_registry

    path = tmp_path / "owners.json"
    path.write_bytes(dumps(DOC))
    base = WorkerConfig()
    assert with_owner_registry(base, None) is base and base.owner_registry is None
    config = with_owner_registry(base, path)
    assert config.owner_registry == parse(dumps(DOC)) and config.inactivity_timeout == base.inactivity_timeout
    assert hash(config) == hash(with_owner_registry(base, path)) and config != base
    with pytest.raises(AttributeError):
        config.owner_registry = None  # type: ignore[misc]


def test_a_bad_registry_stops_the_worker_at_start_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ctpipe.settings import Settings
    from ctpipe.worker import WorkerConfig, run

    path = tmp_path / "owners.json"
    path.write_bytes(
        dumps(
            {
                "owners": [
                    {"domain": "a.com", "content_id_prefixes": ["x:"]},
                    {"domain": "b.com", "content_id_prefixes": ["x:"]},
                ]
            }
        )
    )
    # no broker anywhere: the registry is checked before the worker touches Kafka
    settings = Settings(data_dir=tmp_path, kafka_bootstrap="127.0.0.1:9", owner_registry=path)
    assert run(settings, WorkerConfig()) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "bad owner registry" in err and str(path) in err and "registered to two domains" in err
    settings = Settings(
        data_dir=tmp_path, kafka_bootstrap="127.0.0.1:9", owner_registry=tmp_path / "nope.json"
    )
    assert run(settings, WorkerConfig()) == 2
    assert "cannot read" in capsys.readouterr().err


def test_setting_is_a_path_and_empty_means_no_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    from ctpipe.settings import Settings

    monkeypatch.setenv("CTPIPE_OWNER_REGISTRY", "")
    assert Settings().owner_registry is None
    monkeypatch.setenv("CTPIPE_OWNER_REGISTRY", "/etc/ctpipe/owners.json")
    assert Settings().owner_registry == Path("/etc/ctpipe/owners.json")
    monkeypatch.delenv("CTPIPE_OWNER_REGISTRY")
    assert Settings().owner_registry is None
