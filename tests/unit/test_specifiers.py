"""The agent's PEP 440 (stdlib only, Python 3.8) agrees with `packaging` on what pip would accept."""

from __future__ import annotations

import itertools

import pytest
from packaging.specifiers import Specifier
from packaging.version import Version as PackagingVersion

from provisioner.agent.specifiers import Version, matches, parse_line, same_pin, satisfies

VERSIONS = [
    "1.0", "1.0.0", "1.0a1", "1.0b2", "1.0rc1", "1.0.dev1", "1.0a1.dev1", "1.0.post1", "1.0.post1.dev2",
    "1.0+cpu", "1.0+cu130", "1.0.0+cu130", "1.0+1", "1.0+abc.1", "1.0+abc.2", "1.1", "1!1.0", "0.9", "2.0",
    "2.0rc1", "2.10.0+cu130", "2.10.0+cpu", "2.10.0", "2.10", "2.9.1", "1.3.0dev20260213",
    "1.3.0.dev20260213", "1.3.0", "V1.0", "1.0-1", "1.0_post2", "1.0RC1", "1.0.rev3", "1.0c1", "1.0pre1",
    "1.0alpha1", "1.2.3.4", "1.2.1+cu13.0torch2.10", "1.2.1+torch2.10",
]


def test_pins_without_a_label_match_any_label_and_labels_must_match() -> None:
    assert same_pin("2.10.0+cu130", "2.10.0")
    assert same_pin("2.13.0+cpu", "2.13")
    assert same_pin("2.10.0+cu130", "2.10.0+cu130")
    assert not same_pin("2.10.0+cpu", "2.10.0+cu130")
    assert not same_pin("2.10.0", "2.10.0+cu130")
    assert not same_pin("1.2.1+cu12.8torch2.10", "1.2.1+cu13.0torch2.10")
    assert not same_pin("0.16.1", "1.2.1+cu13.0torch2.10")


def test_spellings_normalize() -> None:
    assert same_pin("1.3.0dev20260213", "1.3.0.dev20260213")
    assert same_pin("v1.0", "1.0") and same_pin("1.0RC1", "1.0rc1") and same_pin("1.0-1", "1.0.post1")
    assert str(Version("1.3.0dev20260213")) == "1.3.0.dev20260213"
    assert str(Version("1.0C1")) == "1.0rc1"


def test_pre_and_dev_releases_order_before_the_release() -> None:
    ordered = ["1.3.0.dev20260101", "1.3.0a1", "1.3.0rc1", "1.3.0", "1.3.0+cpu", "1.3.0.post1", "1.3.1"]
    assert sorted(ordered, key=lambda v: Version(v).key()) == ordered
    assert satisfies("1.3.0.dev20260213", [(">=", "1.2.1"), ("<", "1.4")])
    assert not satisfies("2.0rc1", [("<", "2.0")]), "<2.0 does not admit 2.0's own pre-releases"
    assert not satisfies("1.3.0.dev20260213", [(">=", "1.3.0")])
    assert satisfies("2.10.0+cu130", [(">=", "2.10")])
    assert not satisfies("2.10.0+cu130", [(">", "2.10.0")]), ">V does not admit V's local builds"
    assert satisfies("1.4.2", [("~=", "1.4")]) and not satisfies("2.0", [("~=", "1.4")])
    assert satisfies("2.2.0", [("===", "2.2.0")]) and not satisfies("2.2", [("===", "2.2.0")])


def test_requirements_lines() -> None:
    assert parse_line("torch>=2.5,<2.11  # comment") == ("torch", [(">=", "2.5"), ("<", "2.11")], True)
    assert parse_line("numpy; python_version < '3.9'") == ("numpy", [], False)
    assert parse_line("-r other.txt") is None


@pytest.mark.parametrize("op", ["==", "!=", "<=", ">=", "<", ">", "~=", "==.*", "!=.*", "==="])
def test_agrees_with_packaging(op: str) -> None:
    """Every pair of VERSIONS under one operator, as pip's vendored `packaging` judges an installed version."""
    for have, bound in itertools.product(VERSIONS, VERSIONS):
        want, operator = (bound + ".*", op[:2]) if op.endswith(".*") else (bound, op)
        if "+" in bound and operator not in ("==", "!=", "==="):
            continue  # a local label is not allowed in an ordered bound or a prefix
        if operator == "~=" and len(PackagingVersion(bound).release) < 2:
            continue
        if want.endswith(".*") and PackagingVersion(bound).base_version != bound.lstrip("vV"):
            continue  # a prefix is a bare release (==1.0rc1.* is invalid)
        expected = Specifier(operator + want).contains(have, prereleases=True)
        assert matches(have, operator, want) == expected, f"{have} {operator}{want}"


def test_ordering_and_normal_form_agree_with_packaging() -> None:
    for a, b in itertools.product(VERSIONS, VERSIONS):
        assert (Version(a).key() < Version(b).key()) == (PackagingVersion(a) < PackagingVersion(b)), (a, b)
        assert (Version(a) == Version(b)) == (PackagingVersion(a) == PackagingVersion(b)), (a, b)
    for text in VERSIONS:
        assert str(Version(text)) == str(PackagingVersion(text))
