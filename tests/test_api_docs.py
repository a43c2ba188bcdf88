"""The public API's reference documentation (the docs site renders these docstrings): every
public function, class and method says what it takes, what it returns and shows an example.
The examples themselves run in CI (``python -m pytest --doctest-modules jaxmm``, .ci/run)."""
import dataclasses
import enum
import inspect
import re

import pytest

import jaxmm


def _section(doc: str, name: str) -> str | None:
    """The body of a numpy-style section, or None."""
    match = re.search(rf"^{name}\n-{{{len(name)}}}\n(.*?)(?=^\S[^\n]*\n-+\n|\Z)", doc, re.S | re.M)
    return None if match is None else match.group(1)


def _documented_names(section: str) -> set:
    """The names a Parameters or Attributes section documents ("a, b : type" lines too)."""
    names = set()
    for line in section.splitlines():
        if line and not line[0].isspace():
            for name in line.split(" : ")[0].split(","):
                names.add(name.strip().lstrip("*"))
    return names


def _public_classes():
    for name in jaxmm.__all__:
        obj = getattr(jaxmm, name)
        if inspect.isclass(obj):
            yield name, obj
    for name in jaxmm.errors.__all__:
        yield f"errors.{name}", getattr(jaxmm.errors, name)


def _members():
    """(label, kind, object) of every public function, class, method and property."""
    for name in jaxmm.__all__:
        obj = getattr(jaxmm, name)
        if inspect.isfunction(obj):
            yield name, "function", obj
    for label, cls in _public_classes():
        yield label, "class", cls
        if issubclass(cls, BaseException):
            continue
        for attr in sorted({a for c in cls.__mro__ for a in vars(c)}):
            if attr.startswith("_"):
                continue
            owner = next(c for c in cls.__mro__ if attr in vars(c))
            if not owner.__module__.startswith("jaxmm"):
                continue  # tuple's count/index, the enum machinery
            value = vars(owner)[attr]
            if isinstance(value, property):
                yield f"{label}.{attr}", "property", value
            elif inspect.isfunction(value):
                yield f"{label}.{attr}", "method", value


MEMBERS = sorted(_members(), key=lambda m: m[0])


def test_the_public_api_is_all_collected():
    labels = {m[0] for m in MEMBERS}
    # a sample of each kind, so that a change in how members are found cannot empty the list
    assert {"fit", "CrossedResult", "MixedModelResult.tidy", "CrossedResult.D", "BatchResult.to_frame",
            "CrossedBatchResult.loglik", "errors.DataError", "Status.message"} <= labels
    assert len(MEMBERS) > 100


@pytest.mark.parametrize("label,kind,obj", MEMBERS, ids=[m[0] for m in MEMBERS])
def test_every_public_member_has_parameters_returns_and_an_example(label, kind, obj):
    doc = inspect.cleandoc(obj.__doc__ or "")
    assert doc, f"{label} has no docstring"
    if kind == "property" and doc.startswith("Not an attribute"):
        return  # res.theta: raises, naming the attribute to use instead
    examples = _section(doc, "Examples")
    assert examples is not None and ">>>" in examples, f"{label}: no Examples section with code"
    if kind in ("function", "method"):
        params = [p for p in inspect.signature(obj).parameters.values() if p.name not in ("self", "cls")]
        if params:
            section = _section(doc, "Parameters")
            assert section is not None, f"{label}: no Parameters section"
            missing = {p.name for p in params} - _documented_names(section)
            assert not missing, f"{label}: parameters not documented: {sorted(missing)}"
        assert _section(doc, "Returns") is not None, f"{label}: no Returns section"
    if kind == "class" and not issubclass(obj, (BaseException, enum.Enum)):
        fields = ([f.name for f in dataclasses.fields(obj)] if dataclasses.is_dataclass(obj)
                  else list(getattr(obj, "_fields", ())))
        fields = [f for f in fields if not f.startswith("_")]
        if fields:
            section = _section(doc, "Attributes")
            assert section is not None, f"{label}: no Attributes section"
            missing = set(fields) - _documented_names(section)
            assert not missing, f"{label}: fields not documented: {sorted(missing)}"
